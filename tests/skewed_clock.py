"""Run a Celery command on a host whose clock is off: `python tests/skewed_clock.py SECONDS -A ourvidz worker ...`.

Before Celery or Django load, this process's wall clock moves SECONDS ahead (behind, when negative): time.time,
time.time_ns and django.utils.timezone.now, which is every clock the project reads (model defaults included,
since the models are imported later). Monotonic clocks are left alone, as a host's are. The worker's pool
processes are forked from this one and share the skew.
"""

import sys
import time
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def skew(seconds):
    real_time, real_time_ns = time.time, time.time_ns
    time.time = lambda: real_time() + seconds
    time.time_ns = lambda: real_time_ns() + int(seconds * 1e9)

    from django.utils import timezone

    real_now = timezone.now
    timezone.now = lambda: real_now() + timedelta(seconds=seconds)


if __name__ == "__main__":
    skew(float(sys.argv[1]))
    sys.path.insert(0, str(ROOT))  # as `celery` run from the project's folder finds `ourvidz`
    sys.argv = ["celery", *sys.argv[2:]]
    from celery.__main__ import main

    main()
