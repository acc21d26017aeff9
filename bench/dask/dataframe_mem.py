"""Peak RSS of Dask's workers for the four timed queries of dataframe_groupby.py (csv/parquet
x Q1/Q2) on the files it generates in /tmp/daskbench/data; a fresh LocalCluster per format,
warmed up on one file as dataframe_groupby.py does."""
import json, logging, resource, time
import dask.dataframe as dd
from distributed import Client, LocalCluster

DATA = "/tmp/daskbench/data"

def peak():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

def main():
    out = {}
    for fmt in ["csv", "parquet"]:
        cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                               dashboard_address=None, silence_logs=logging.ERROR)
        client = Client(cluster)
        client.wait_for_workers(2)
        read = (lambda p: dd.read_csv(p)) if fmt == "csv" else (lambda p: dd.read_parquet(p))
        one = f"{DATA}/{fmt}/part-00.{fmt}"
        read(one).groupby("key").x.sum().compute()
        everything = f"{DATA}/csv/*.csv" if fmt == "csv" else f"{DATA}/parquet"
        t0 = time.perf_counter()
        read(everything).groupby("key").x.sum().compute()
        out[f"{fmt}_q1_s"] = round(time.perf_counter() - t0, 3)
        t0 = time.perf_counter()
        read(everything).groupby("key").agg({"x": "mean", "y": "max"}).compute()
        out[f"{fmt}_q2_s"] = round(time.perf_counter() - t0, 3)
        out[f"{fmt}_worker_peak_rss_bytes"] = sorted(client.run(peak).values())
        client.close(); cluster.close()
    print(json.dumps(out))

if __name__ == "__main__":
    main()
