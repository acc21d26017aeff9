"""Peak RSS of Dask's workers for the two expressions of array_sum.py (fresh LocalCluster each)."""
import json, logging, os, resource, time
os.environ.setdefault("OMP_NUM_THREADS", "1")
import dask.array as da
from distributed import Client, LocalCluster

def peak():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

def main():
    out = {}
    for name in ["sum_xxT", "mean_axis0"]:
        cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                               dashboard_address=None, silence_logs=logging.ERROR)
        client = Client(cluster)
        client.wait_for_workers(2)
        x = da.random.random((20000, 20000), chunks=(2000, 2000))
        t0 = time.perf_counter()
        if name == "sum_xxT":
            (x + x.T).sum().compute()
        else:
            x.mean(axis=0).compute()
        out[name + "_s"] = round(time.perf_counter() - t0, 3)
        out[name + "_worker_peak_rss_bytes"] = sorted(client.run(peak).values())
        client.close(); cluster.close()
    print(json.dumps(out))

if __name__ == '__main__':
    main()
