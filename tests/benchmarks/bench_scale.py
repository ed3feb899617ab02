"""Scale-out benchmark: does a second worker of a pool on this machine drain a backlog faster, or starve the first?

    make bench-scale                                   # 60 jobs; one worker, two, two without the thread budget
    make bench-scale ARGS="--jobs 30 --modes one two"
    make bench-scale ARGS="--gpus 0 1"                 # each worker pinned to its own GPU (as `make worker GPU=n`)

Runs gunicorn from the Procfile and SDXL workers as `make worker` starts them (`python -m ourvidz.worker sdxl
--name …`, each under ourvidz.supervise), on the tiny model, against a scratch database `ourvidz_bench_scale` and
Redis database 13, both emptied before each mode. With the workers ready, one user submits --jobs sdxl_image_fast
jobs over HTTP; the drain time is from the first submission to the last completion (database timestamps). Prints
figures side by side; asserts nothing about speed.

Modes:
- one: one worker;
- two: two workers, each with its thread budget (this machine's cores divided between them: the default);
- two-unbudgeted: two workers that each take every core (WORKER_THREADS = the cores), as torch does by default:
  what the budget prevents (measured before it: 3.9-4.2x slower than one worker).
Goal: two workers not slower than one on a shared CPU; on separate GPUs (--gpus), nearly twice as fast.
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import common
from common import Procs, request

BENCH_DB = "ourvidz_bench_scale"
REDIS_DB = 13
PORT = 8767
JOB_TYPE = "sdxl_image_fast"
STALL_SECONDS = 120  # no job finishing for this long ends the run
MODES = {"one": 1, "two": 2, "two-unbudgeted": 2}


class Worker:
    """One SDXL worker as `make worker` starts it, under its own supervisor."""

    def __init__(self, name, gpu, env, log):
        args = ["--name", name, "--no-setup", "--supervise"] + (["--gpu", str(gpu)] if gpu is not None else [])
        self.process = subprocess.Popen([sys.executable, "-m", "ourvidz.worker", "sdxl", *args], cwd=common.ROOT,
                                        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def stop(self):
        os.killpg(self.process.pid, 2)  # SIGINT, as Ctrl-C
        self.process.wait(60)


def run_mode(mode, jobs, gpus, data_dir, log):
    """Drain `jobs` jobs in `mode`; the figures of the run."""
    import psycopg2

    env = common.stack_env(BENCH_DB, data_dir, PORT, REDIS_DB)
    if mode == "two-unbudgeted":
        env["WORKER_THREADS"] = str(len(os.sched_getaffinity(0)))
    token, = common.reset_stack(env, BENCH_DB, ["bench"])
    db = psycopg2.connect(env["DATABASE_URL"])
    db.autocommit = True
    web = Procs(["web"], env, log)
    workers = [Worker(f"sdxl-{i + 1}", gpus[i] if gpus else None, env, log) for i in range(MODES[mode])]
    try:
        conn = common.wait_http(PORT, token)
        wait_ready(conn, token, MODES[mode])
        for i in range(jobs):
            status, job = request(conn, "POST", "/api/jobs/", token, {"job_type": JOB_TYPE, "prompt": f"a cat {i}"})
            assert status == 201, job
        common.wait_ended(db, jobs, STALL_SECONDS, pause=0.2)
    finally:
        for worker in workers:
            worker.stop()
        web.stop()
    with db.cursor() as cursor:
        cursor.execute("SELECT status, worker, created_at, started_at, completed_at FROM generation_job")
        rows = cursor.fetchall()
    db.close()
    completed = [row for row in rows if row[0] == "completed"]
    return {
        "drain": (max(r[4] for r in completed) - min(r[2] for r in rows)).total_seconds(),
        "run_time": statistics.median((r[4] - r[3]).total_seconds() for r in completed),
        "per_worker": "/".join(str(n) for n in sorted(count_by_node(completed).values(), reverse=True)),
        "check": "OK" if len(completed) == len(rows) == jobs else f"{len(completed)} of {jobs} completed",
    }


def count_by_node(rows):
    """Completed jobs per worker node (Job.worker is "<node>/<pid>"; a restarted worker is the same node)."""
    counts = {}
    for row in rows:
        node = (row[1] or "?").rsplit("/", 1)[0]
        counts[node] = counts.get(node, 0) + 1
    return counts


def wait_ready(conn, token, count, timeout=180):
    """Wait until `count` SDXL workers are online with their models loaded."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        stats = {q["queue"]: q for q in request(conn, "GET", "/api/queues/", token)[1]}
        if stats["sdxl_queue"]["workers_ready"] == count:
            return
        time.sleep(0.5)
    raise TimeoutError(f"{count} SDXL workers did not come online")


LINES = [  # (label, figure, format)
    ("drain time (s)", "drain", "{:.1f}"),
    ("jobs per second", "throughput", "{:.2f}"),
    ("median job run time (s)", "run_time", "{:.3f}"),
    ("jobs per worker", "per_worker", "{}"),
    ("all completed", "check", "{}"),
]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=60, help="jobs to drain per mode (default 60)")
    parser.add_argument("--modes", nargs="+", choices=list(MODES), default=list(MODES))
    parser.add_argument("--gpus", nargs=2, type=int, help="pin the workers to these GPUs (one each)")
    args = parser.parse_args()

    data_dir = Path(tempfile.mkdtemp(prefix="ourvidz-bench-scale-"))
    log_path = data_dir / "stack.log"
    print(f"stack log: {log_path}")
    results = {}
    with open(log_path, "wb") as log:
        for mode in args.modes:
            results[mode] = run_mode(mode, args.jobs, args.gpus, data_dir, log)
            results[mode]["throughput"] = args.jobs / results[mode]["drain"]

    where = f"GPUs {args.gpus[0]} and {args.gpus[1]}" if args.gpus else f"{len(os.sched_getaffinity(0))} CPU cores"
    print(f"\nDrain of {args.jobs} {JOB_TYPE} jobs (tiny model) by SDXL workers on this machine ({where})")
    print(f"  {'':26}" + "".join(f"{mode:>16}" for mode in args.modes))
    for label, key, fmt in LINES:
        print(f"  {label:26}" + "".join(f"{fmt.format(results[mode][key]):>16}" for mode in args.modes))
    if "one" in results:
        for mode in (m for m in args.modes if m != "one"):
            print(f"  {mode} / one drain time: {results[mode]['drain'] / results['one']['drain']:.2f}")
    print("  goal: two workers not slower than one on a shared CPU (ratio <= 1); on separate GPUs, near 0.5")


if __name__ == "__main__":
    main()
