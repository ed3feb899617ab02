"""Platform-core benchmark: overhead the platform adds per job, and submission throughput.

    make bench-core                       # both parts
    make bench-core ARGS="--jobs 20"      # fewer latency jobs

Runs the real stack from the Procfile (gunicorn, Celery workers) on tiny models, against a
scratch database `ourvidz_bench` and Redis database 15, both emptied first. Prints figures;
asserts nothing about speed.

1. Added latency: jobs submitted one after another over HTTP; for each, the time from POST to
   "completed" visible in the API, minus the worker's own generation time. Goal: p50 <= 50 ms.
2. Throughput: with the workers stopped, 8 client processes POST 2,000 jobs; jobs per second,
   then the database and the queues must hold exactly 2,000. Goal here: >= 200 jobs/s.
"""

import argparse
import http.client
import json
import multiprocessing
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import common

ROOT = common.ROOT
BENCH_DB = "ourvidz_bench"
HOST, PORT = "127.0.0.1", 8765


def bench_env(data_dir):
    env = dict(os.environ)
    env.update({
        **common.scratch_env(BENCH_DB),
        "OURVIDZ_DATA_DIR": str(data_dir),
        "OURVIDZ_MODELS_DIR": str(ROOT / "var" / "models"),
        "WEB_BIND": f"{HOST}:{PORT}",
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
    })
    return env


def manage(env, *args):
    return subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=env, check=True,
                          capture_output=True, text=True).stdout


def reset(env):
    """Fresh scratch database and Redis db, the dev models, and a user with an API token."""
    import redis

    common.recreate_database(BENCH_DB)
    redis.Redis.from_url(env["REDIS_URL"]).flushdb()
    manage(env, "setup")
    return manage(env, "shell", "-c", (
        "from django.contrib.auth.models import User; from rest_framework.authtoken.models import Token; "
        "u = User.objects.create_user('bench'); print(Token.objects.create(user=u).key)")).split()[-1]


class Procs:
    def __init__(self, names, env, log):
        self.process = subprocess.Popen(["honcho", "-f", str(ROOT / "Procfile"), "start", *names], cwd=ROOT,
                                        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def stop(self):
        os.killpg(self.process.pid, signal.SIGINT)
        self.process.wait(60)


def request(conn, method, path, token, body=None):
    headers = {"Authorization": f"Token {token}", "Content-Type": "application/json"}
    conn.request(method, path, body=json.dumps(body) if body is not None else None, headers=headers)
    response = conn.getresponse()
    return response.status, json.loads(response.read() or b"null")


def wait_http(token, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            conn = http.client.HTTPConnection(HOST, PORT, timeout=5)
            if request(conn, "GET", "/api/queues/", token)[0] == 200:
                return conn
        except OSError:
            time.sleep(0.2)
    raise TimeoutError("web server did not answer")


def wait_workers(conn, token, timeout=120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        queues = request(conn, "GET", "/api/queues/", token)[1]
        if all(q["workers"] for q in queues):
            return
        time.sleep(0.5)
    raise TimeoutError("workers did not come online")


def added_latency(env, token, jobs, log):
    procs = Procs(["web", "sdxl", "wan"], env, log)
    try:
        conn = wait_http(token)
        wait_workers(conn, token)
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
    conn = http.client.HTTPConnection(HOST, PORT, timeout=30)
    ids = []
    for i in range(count):
        job_type = "sdxl_image_fast" if i % 2 == 0 else "video_fast"
        status, job = request(conn, "POST", "/api/jobs/", token, {"job_type": job_type, "prompt": f"job {i}"})
        if status != 201:
            raise RuntimeError(f"{status}: {job}")
        ids.append(job["id"])
    return ids


def throughput(env, token, total, clients, log):
    import psycopg2
    import redis

    procs = Procs(["web"], env, log)  # no workers: everything stays queued
    try:
        wait_http(token).close()
        manager = multiprocessing.Manager()
        barrier = manager.Barrier(clients + 1)
        with multiprocessing.Pool(clients) as pool:
            result = pool.map_async(_client, [(token, total // clients, barrier)] * clients)
            barrier.wait()
            start = time.perf_counter()
            ids = [i for chunk in result.get() for i in chunk]
            elapsed = time.perf_counter() - start
    finally:
        procs.stop()
    conn = psycopg2.connect(env["DATABASE_URL"])
    with conn.cursor() as cursor:
        cursor.execute("SELECT count(*), count(DISTINCT id) FROM generation_job")
        rows, distinct = cursor.fetchone()
    conn.close()
    broker = redis.Redis.from_url(env["REDIS_URL"])
    queued = broker.llen("sdxl_queue") + broker.llen("wan_queue")
    return len(ids), len(set(ids)), elapsed, rows, distinct, queued


def percentile(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q / 100 * (len(values) - 1))))]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=50, help="latency jobs (default 50)")
    parser.add_argument("--submit", type=int, default=2000, help="throughput jobs (default 2000)")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--skip-latency", action="store_true")
    parser.add_argument("--skip-throughput", action="store_true")
    args = parser.parse_args()

    data_dir = Path(tempfile.mkdtemp(prefix="ourvidz-bench-"))
    env = bench_env(data_dir)
    log_path = data_dir / "stack.log"
    print(f"stack log: {log_path}")
    with open(log_path, "wb") as log:
        if not args.skip_latency:
            token = reset(env)
            overheads, totals = added_latency(env, token, args.jobs, log)
            ms = [1000 * v for v in overheads]
            print(f"\nAdded latency over {len(ms)} jobs (POST -> completed visible, minus generation time)")
            print(f"  overhead p50 {percentile(ms, 50):7.1f} ms   p95 {percentile(ms, 95):7.1f} ms   "
                  f"max {max(ms):7.1f} ms   (goal: p50 <= 50 ms)")
            print(f"  end-to-end p50 {1000 * statistics.median(totals):7.1f} ms")
        if not args.skip_throughput:
            token = reset(env)
            sent, unique, elapsed, rows, distinct, queued = throughput(env, token, args.submit, args.clients, log)
            print(f"\nSubmission throughput: {args.clients} clients, {sent} jobs, workers stopped")
            print(f"  {sent / elapsed:7.1f} jobs/s accepted in {elapsed:.2f} s   (goal: >= 200 jobs/s)")
            print(f"  database rows {rows} (distinct {distinct}), queued tasks {queued}, distinct ids returned "
                  f"{unique}: {'OK' if rows == distinct == queued == unique == args.submit else 'MISMATCH'}")


if __name__ == "__main__":
    main()
