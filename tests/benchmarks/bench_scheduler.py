"""Scheduler benchmark: does one user's backlog hold back another's job, and does the pool lose throughput?

    make bench-scheduler                                  # 200 jobs, both modes
    make bench-scheduler ARGS="--jobs 40 --modes fair"

Runs the real stack from the Procfile (gunicorn and one SDXL worker) on tiny models, against a scratch
database `ourvidz_bench_scheduler` and Redis database 14, both emptied before each mode. User A submits
--jobs sdxl_image_fast jobs over HTTP, one after another as fast as the API takes them, then user B
submits one. Times come from the database (Job.created_at, released_at, started_at, completed_at).
Prints figures; asserts nothing about speed.

Modes, same workload:
- fair: the scheduler as configured (SCHEDULER_BUFFER_PER_WORKER from the environment, else its default);
- fifo: the behaviour before the scheduler, approximated by a buffer so large that every job is released
  on submission: the broker holds them all in submission order.

Per mode: A's jobs started before B's (goal: at most those already released when B's POST returned;
FIFO gives all of them), B's wait from submission to start, the run's total time (first submission to
last completion), the pool's throughput (jobs from the first start to the last completion) and the
worker's idle share (gaps between a job's completion and the next start, over that span), and the
median time a job ran (started to completed), which tells a busier machine from an idle worker. Then
fair/fifo throughput (goal: no loss, within noise). Checks that every job completed and was released once.
"""

import argparse
import itertools
import statistics
import tempfile
import time
from pathlib import Path

import common
from common import Procs, request

BENCH_DB = "ourvidz_bench_scheduler"
REDIS_DB = 14
PORT = 8766
JOB_TYPE = "sdxl_image_fast"
FIFO_BUFFER = 1_000_000  # released jobs per worker: everything, at once
STALL_SECONDS = 120  # no job finishing for this long ends the run


def submit(conn, token, prompt):
    status, job = request(conn, "POST", "/api/jobs/", token, {"job_type": JOB_TYPE, "prompt": prompt})
    assert status == 201, job
    return job["id"]


def run_mode(mode, jobs, data_dir, log):
    """Run the workload in `mode`; return its jobs as dicts (user, status, releases, timestamps in seconds)
    and when B's POST returned (seconds since the epoch)."""
    import psycopg2

    env = common.stack_env(BENCH_DB, data_dir, PORT, REDIS_DB)
    if mode == "fifo":
        env["SCHEDULER_BUFFER_PER_WORKER"] = str(FIFO_BUFFER)
    token_a, token_b = common.reset_stack(env, BENCH_DB, ["a", "b"])
    db = psycopg2.connect(env["DATABASE_URL"])
    db.autocommit = True
    procs = Procs(["web", "sdxl"], env, log)
    try:
        conn = common.wait_http(PORT, token_a)
        common.wait_workers(conn, token_a, ["sdxl_queue"])
        for i in range(jobs):
            submit(conn, token_a, f"a cat, number {i}")
        submit(conn, token_b, "a dog")
        b_submitted = time.time()
        common.wait_ended(db, jobs + 1, STALL_SECONDS)
    finally:
        procs.stop()
    with db.cursor() as cursor:
        cursor.execute("SELECT u.username, j.status, j.releases, j.created_at, j.released_at, j.started_at, "
                       "j.completed_at FROM generation_job j JOIN auth_user u ON u.id = j.user_id")
        columns = [c.name for c in cursor.description]
        rows = [dict(zip(columns, row, strict=True)) for row in cursor.fetchall()]
    db.close()
    for row in rows:
        for name in ("created_at", "released_at", "started_at", "completed_at"):
            row[name] = row[name].timestamp() if row[name] else None
    return rows, b_submitted


def figures(rows, b_submitted):
    """The printed figures of one mode's run."""
    b = next(r for r in rows if r["username"] == "b")
    a = [r for r in rows if r["username"] == "a"]
    ok = all(r["status"] == "completed" and r["releases"] == 1 for r in rows)
    if not ok:
        return {"check": "MISMATCH"}
    by_start = sorted(rows, key=lambda r: r["started_at"])
    first_start, last_end = by_start[0]["started_at"], max(r["completed_at"] for r in rows)
    span = last_end - first_start
    idle = sum(max(0.0, nxt["started_at"] - prev["completed_at"]) for prev, nxt in itertools.pairwise(by_start))
    return {
        "started_before": sum(r["started_at"] < b["started_at"] for r in a),
        "released_before": sum(r["released_at"] <= b_submitted for r in a),
        "b_wait": b["started_at"] - b["created_at"],
        "total": last_end - min(r["created_at"] for r in rows),
        "throughput": len(rows) / span,
        "run_time": statistics.median(r["completed_at"] - r["started_at"] for r in rows),
        "idle": idle / span,
        "check": "OK",
    }


LINES = [  # (label, figure, format)
    ("A's jobs started before B's", "started_before", "{:d}"),
    ("A's jobs released when B submitted", "released_before", "{:d}"),
    ("B's wait (s)", "b_wait", "{:.2f}"),
    ("total run time (s)", "total", "{:.1f}"),
    ("pool throughput (jobs/s)", "throughput", "{:.3f}"),
    ("worker idle share", "idle", "{:.1%}"),
    ("median job run time (s)", "run_time", "{:.3f}"),
    ("all completed, each released once", "check", "{}"),
]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=200, help="user A's jobs (default 200)")
    parser.add_argument("--modes", nargs="+", choices=["fair", "fifo"], default=["fair", "fifo"])
    args = parser.parse_args()

    data_dir = Path(tempfile.mkdtemp(prefix="ourvidz-bench-scheduler-"))
    log_path = data_dir / "stack.log"
    print(f"stack log: {log_path}")
    results = {}
    with open(log_path, "wb") as log:
        for mode in args.modes:
            results[mode] = figures(*run_mode(mode, args.jobs, data_dir, log))

    print(f"\nUser A queues {args.jobs} {JOB_TYPE} jobs, then user B submits one; one SDXL worker")
    print(f"  {'':36}" + "".join(f"{mode:>10}" for mode in args.modes))
    for label, key, fmt in LINES:
        values = [fmt.format(results[mode][key]) if key in results[mode] else "-" for mode in args.modes]
        print(f"  {label:36}" + "".join(f"{v:>10}" for v in values))
    print("  goal: A's jobs started before B's <= those released when B submitted (FIFO: all of A's)")
    if all("throughput" in results.get(mode, {}) for mode in ("fair", "fifo")):
        ratio = results["fair"]["throughput"] / results["fifo"]["throughput"]
        print(f"  fair/fifo throughput {ratio:.3f}   (goal: no loss, within noise)")


if __name__ == "__main__":
    main()
