"""Fault benchmark: what survives what, in jobs lost, doubled and stuck, and how long recovery takes.

    make bench-faults                              # 20 jobs per fault, every fault
    make bench-faults ARGS="--jobs 8 --faults redis_killed database_stopped"

Runs the stack of `make run` (web, both pools, housekeeping and beat under ourvidz.supervise) on the tiny
development models, with a PostgreSQL and a Redis of its own that it stops, kills and starts (tests/faults.py,
which tests/test_faults.py runs with a few jobs). For each fault: --jobs image jobs are submitted over HTTP,
the fault hits while one of them runs (for the Redis and PostgreSQL outages of 20 s and the worker's restart,
a long job that runs through it), and afterwards every job is accounted for from the database, the stored
files and the workers' log. Prints figures; asserts nothing.

- lost: accepted jobs missing, or completed without their files; stuck: still queued or processing 180 s
  after the fault ended; doubled: a job rendered twice, or with more files or rows than it asked for
  (goal 0 / 0 / 0).
- starts: how many times workers started the jobs (above the job count: runs repeated after the fault).
- next done / all done: seconds from the fault's end (the server started again, the process killed) to the
  next job finished, and to the last. Where a long job runs through the fault, the next one done is that
  job (the others wait behind it on the one SDXL worker).
The stack uses tests/faults.py's QUICK_SETTINGS (a worker is lost after 6 s, beat ticks every second), as
the tests do; with the defaults, a vanished worker's job waits WORKER_LOST_AFTER (20 s), the scheduler's
confirmation (5 s) and a tick (up to 5 s).
"""

import argparse
import sys
import tempfile
import time
from pathlib import Path

import common

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/, for faults.py
import faults  # noqa: E402

# A job of about 45 s on the tiny model (128×128, 0.2 s a step on this 2-core CPU): it runs through the 20 s
# outages (the issue's) and through a worker's restart, with time to spare for the scheduler to (wrongly)
# take it back.
LONG_STEPS = 220
FAULTS = {
    "stack_restarted": faults.stack_restarted,
    "broker_data_lost": lambda stack, jobs: faults.stack_restarted(stack, jobs, broker_data_lost=True),
    "redis_killed": lambda stack, jobs: faults.redis_killed(stack, jobs, down=20, long_steps=LONG_STEPS),
    "database_stopped": lambda stack, jobs: faults.database_stopped(stack, jobs, down=20, long_steps=LONG_STEPS),
    "pool_restarted": lambda stack, jobs: faults.pool_restarted(stack, jobs, long_steps=LONG_STEPS),
    "worker_killed": faults.worker_killed,
    "poison_job": faults.poison_job,
}


def stack_env():
    """The environment of the stack's processes: the development models under var/models, quiet logs but
    the workers' INFO lines (faults.py counts the renders in them)."""
    env = common.stack_env("unused", Path(tempfile.gettempdir()), 0)
    env.update({"DJANGO_SECRET_KEY": "bench-secret-key-not-for-production-use-0123456789", "LOG_LEVEL": "INFO",
                "OURVIDZ_PROFILE": "dev"})
    return env


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=20, help="image jobs per fault (default 20)")
    parser.add_argument("--faults", nargs="+", choices=list(FAULTS), default=list(FAULTS))
    args = parser.parse_args()

    directory = Path(tempfile.mkdtemp(prefix="ourvidz-bench-faults-"))
    print(f"stack log: {directory / 'stack.log'}")
    stack = faults.FaultStack(directory, stack_env())
    outcomes = []
    try:
        started = time.monotonic()
        stack.start()
        print(f"stack up in {time.monotonic() - started:.1f} s")
        for name in args.faults:
            outcome = FAULTS[name](stack, args.jobs)
            outcomes.append(outcome)
            print(f"- {outcome.fault}: " + "; ".join(outcome.notes), flush=True)
    finally:
        stack.close()

    print(f"\n{args.jobs} image jobs per fault (plus those submitted during it); tiny models on this CPU")
    header = f"  {'fault':54}{'accepted':>9}{'lost':>6}{'doubled':>8}{'stuck':>6}{'failed':>7}{'starts':>7}" \
             f"{'next done s':>12}{'all done s':>11}"
    print(header)
    for o in outcomes:
        print(f"  {o.fault:54}{o.accepted:>9}{len(o.lost):>6}{len(o.doubled):>8}{len(o.stuck):>6}"
              f"{len(o.failed):>7}{o.starts:>7}{_seconds(o.recovery):>12}{_seconds(o.drained):>11}")
    print("  goal: lost / doubled / stuck 0 / 0 / 0; failed: only the poison job")
    for o in outcomes:
        for job_id, error in o.failed.items():
            print(f"  {o.fault}: job {job_id} failed: {error}")


def _seconds(value):
    return "-" if value is None else f"{value:.1f}"


if __name__ == "__main__":
    main()
