"""Worker-to-worker transfer in Dask, plain TCP and TLS, for `fabric-bench cluster [--tls] transfer`.

A NumPy array of SIZE bytes (float64) is made on worker A and its length taken on worker B;
the time of that second task minus a tiny-object baseline is the transfer. Usage:
    python transfer_tls.py CERTDIR [SIZE...]
where CERTDIR holds ca.pem and node.pem/node.key of that CA (`fabric ca init --dir CERTDIR`,
`fabric cert issue --role worker --name node --ca-dir CERTDIR --out-dir CERTDIR`).
Prints one JSON line per (mode, size): the median GB/s of 3 runs and the runs.
"""
import json, logging, os, statistics, sys, time
os.environ.setdefault("OMP_NUM_THREADS", "1")
import numpy as np
from distributed import Client, LocalCluster
from distributed.security import Security


def make(n):
    return np.ones(n // 8)


def size_of(x):
    return len(x)


def run(mode, certs, sizes):
    kwargs = {}
    if mode == "tls":
        pem = lambda name: os.path.join(certs, name)
        security = Security(tls_ca_file=pem("ca.pem"),
                            tls_client_cert=pem("node.pem"), tls_client_key=pem("node.key"),
                            tls_scheduler_cert=pem("node.pem"), tls_scheduler_key=pem("node.key"),
                            tls_worker_cert=pem("node.pem"), tls_worker_key=pem("node.key"),
                            require_encryption=True)
        kwargs = dict(security=security, protocol="tls://")
    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                           dashboard_address=None, silence_logs=logging.ERROR, **kwargs)
    client = Client(cluster, security=kwargs.get("security"))
    client.wait_for_workers(2)
    a, b = sorted(client.scheduler_info()["workers"])
    for size in sizes:
        runs = []
        for i in range(3):
            tiny = client.submit(make, 8, workers=[a], pure=False)
            tiny.result()
            t0 = time.perf_counter()
            client.submit(size_of, tiny, workers=[b], pure=False).result()
            base = time.perf_counter() - t0
            big = client.submit(make, size, workers=[a], pure=False)
            big.result()
            t0 = time.perf_counter()
            client.submit(size_of, big, workers=[b], pure=False).result()
            elapsed = time.perf_counter() - t0 - base
            runs.append(size / max(elapsed, 1e-9) / 1e9)
            del big, tiny
        print(json.dumps({"bench": "dask-transfer", "mode": mode, "bytes": size,
                          "gb_per_s": statistics.median(runs), "runs_gb_per_s": runs}), flush=True)
    client.close()
    cluster.close()


if __name__ == "__main__":
    certs = sys.argv[1]
    sizes = [int(s) for s in sys.argv[2:]] or [256 << 20, 960 << 20]
    for mode in ["plain", "tls"]:
        run(mode, certs, sizes)
