"""Platform-core benchmark: overhead the platform adds per job, and submission throughput.

    make bench-core                       # both parts
    make bench-core ARGS="--jobs 20"      # fewer latency jobs

Runs the real stack from the Procfile (gunicorn, Celery workers) on tiny models, against a
scratch database `ourvidz_bench` and Redis database 15, both emptied first. Prints figures;
asserts nothing about speed.

1. Added latency: jobs submitted one after another over HTTP; for each, the time from POST to
   "completed" visible in the API, minus the worker's own generation time. Goal: p50 <= 50 ms.
2. Throughput: with the workers stopped, 8 client processes POST 2,000 jobs (as one user, or as --users
   users); jobs per second, and the web processes' CPU per job (steadier than throughput on a shared VM);
   then the database must hold exactly 2,000, all waiting there, and the broker none (with no
   worker online the scheduler releases nothing). Goal here: >= 200 jobs/s.
"""

import argparse
import http.client
import multiprocessing
import statistics
import tempfile
import time
from pathlib import Path

import common
from common import Procs, request

BENCH_DB = "ourvidz_bench"
PORT = 8765


def added_latency(env, token, jobs, log):
    procs = Procs(["web", "sdxl", "wan"], env, log)
    try:
        conn = common.wait_http(PORT, token)
        common.wait_workers(conn, token)
        overheads, totals = [], []
        for i in range(jobs + 2):
            job_type = "sdxl_image_fast" if i % 2 == 0 else "image_fast"
            start = time.perf_counter()
            status, job = request(conn, "POST", "/api/jobs/", token, {"job_type": job_type, "prompt": "a cat"})
            assert status == 201, job
            while job["status"] not in ("completed", "failed", "cancelled"):
                time.sleep(0.002)
                job = request(conn, "GET", f"/api/jobs/{job['id']}/", token)[1]
            total = time.perf_counter() - start
            assert job["status"] == "completed", job
            if i >= 2:  # the first job of each pool pays one-off costs (connections, caches)
                totals.append(total)
                overheads.append(total - job["metadata"]["timings"]["generate"])
    finally:
        procs.stop()
    return overheads, totals


def _client(args):
    token, count, barrier = args
    barrier.wait()
    conn = http.client.HTTPConnection(common.HOST, PORT, timeout=30)
    ids = []
    for i in range(count):
        job_type = "sdxl_image_fast" if i % 2 == 0 else "video_fast"
        status, job = request(conn, "POST", "/api/jobs/", token, {"job_type": job_type, "prompt": f"job {i}"})
        if status != 201:
            raise RuntimeError(f"{status}: {job}")
        ids.append(job["id"])
    return ids


def throughput(env, tokens, total, clients, log):
    import psycopg2
    import redis

    procs = Procs(["web"], env, log)  # no workers: everything waits in the database, nothing is released
    try:
        common.wait_http(PORT, tokens[0]).close()
        manager = multiprocessing.Manager()
        barrier = manager.Barrier(clients + 1)
        with multiprocessing.Pool(clients) as pool:
            # Client i submits as user i mod len(tokens): one user's submissions are charged one after another
            # (each holds that user's balance row until its commit), different users' side by side.
            result = pool.map_async(_client, [(tokens[i % len(tokens)], total // clients, barrier)
                                              for i in range(clients)])
            cpu = procs.cpu_seconds()
            barrier.wait()
            start = time.perf_counter()
            ids = [i for chunk in result.get() for i in chunk]
            elapsed = time.perf_counter() - start
            cpu = procs.cpu_seconds() - cpu
    finally:
        procs.stop()
    conn = psycopg2.connect(env["DATABASE_URL"])
    with conn.cursor() as cursor:
        cursor.execute("SELECT count(*), count(DISTINCT id), "
                       "count(*) FILTER (WHERE status = 'queued' AND released_at IS NULL) FROM generation_job")
        rows, distinct, waiting = cursor.fetchone()
    conn.close()
    broker = redis.Redis.from_url(env["REDIS_URL"])
    in_broker = broker.llen("sdxl_queue") + broker.llen("wan_queue")
    return len(ids), len(set(ids)), elapsed, cpu, rows, distinct, waiting, in_broker


def percentile(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q / 100 * (len(values) - 1))))]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=50, help="latency jobs (default 50)")
    parser.add_argument("--submit", type=int, default=2000, help="throughput jobs (default 2000)")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--users", type=int, default=1, help="users the throughput clients submit as (default 1)")
    parser.add_argument("--skip-latency", action="store_true")
    parser.add_argument("--skip-throughput", action="store_true")
    args = parser.parse_args()

    data_dir = Path(tempfile.mkdtemp(prefix="ourvidz-bench-"))
    env = common.stack_env(BENCH_DB, data_dir, PORT)
    log_path = data_dir / "stack.log"
    print(f"stack log: {log_path}")
    with open(log_path, "wb") as log:
        if not args.skip_latency:
            token, = common.reset_stack(env, BENCH_DB, ["bench"])
            overheads, totals = added_latency(env, token, args.jobs, log)
            ms = [1000 * v for v in overheads]
            print(f"\nAdded latency over {len(ms)} jobs (POST -> completed visible, minus generation time)")
            print(f"  overhead p50 {percentile(ms, 50):7.1f} ms   p95 {percentile(ms, 95):7.1f} ms   "
                  f"max {max(ms):7.1f} ms   (goal: p50 <= 50 ms)")
            print(f"  end-to-end p50 {1000 * statistics.median(totals):7.1f} ms")
        if not args.skip_throughput:
            tokens = common.reset_stack(env, BENCH_DB, [f"bench{i}" for i in range(args.users)])
            sent, unique, elapsed, cpu, rows, distinct, waiting, in_broker = throughput(env, tokens, args.submit,
                                                                                       args.clients, log)
            print(f"\nSubmission throughput: {args.clients} clients as {args.users} user(s), {sent} jobs, "
                  "workers stopped")
            print(f"  {sent / elapsed:7.1f} jobs/s accepted in {elapsed:.2f} s   (goal: >= 200 jobs/s)")
            print(f"  web processes' CPU per job {1000 * cpu / sent:.2f} ms (user + system, all gunicorn processes)")
            ok = rows == distinct == waiting == unique == args.submit and in_broker == 0
            print(f"  database rows {rows} (distinct {distinct}), waiting unreleased {waiting}, tasks in the broker "
                  f"{in_broker}, distinct ids returned {unique}: {'OK' if ok else 'MISMATCH'}")


if __name__ == "__main__":
    main()
