"""Live-stream benchmark: can one user's open streams starve the API?

    make bench-streams                      # 64 streams, 200 probes each of /healthz and GET /api/jobs/
    make bench-streams ARGS="--streams 40"

Runs the Procfile's `web` process (gunicorn, its default workers and threads) against a scratch database
`ourvidz_bench_streams`. One logged-in user opens --streams `/events/jobs` streams at once and keeps them
open (as that many tabs would); meanwhile another client times /healthz and GET /api/jobs/. The same probes
run first with no stream open, side by side. Prints how many streams were served and refused (429: the page
polls instead) and the probes' p50 / p99 / max. Goal: p99 under 200 ms with the streams held. Asserts nothing.
"""

import argparse
import re
import tempfile
import threading
import time
from pathlib import Path

import common
import requests

BENCH_DB = "ourvidz_bench_streams"
PORT = 8767
BASE = f"http://{common.HOST}:{PORT}"
PASSWORD = "bench-streams-password-1"


def login():
    """A requests session logged in through the login page, as a browser is."""
    session = requests.Session()
    page = session.get(f"{BASE}/accounts/login/", timeout=10).text
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page)[1]
    answer = session.post(f"{BASE}/accounts/login/", data={"username": "bench", "password": PASSWORD,
                                                           "csrfmiddlewaretoken": token},
                          headers={"Referer": f"{BASE}/accounts/login/"}, timeout=10, allow_redirects=False)
    assert answer.status_code == 302, answer.text[:500]
    return session


def probe(session, token, count):
    """Seconds each of `count` GET /healthz and GET /api/jobs/ took."""
    times = {"/healthz": [], "/api/jobs/": []}
    for _ in range(count):
        for path, timed in times.items():
            start = time.perf_counter()
            response = session.get(BASE + path, headers={"Authorization": f"Token {token}"}, timeout=30)
            timed.append(time.perf_counter() - start)
            assert response.status_code == 200, (path, response.status_code)
    return times


def hold_streams(cookies, count, stop):
    """Open `count` streams with the user's session; return the status codes once all have answered. Each
    stream that was served is read until `stop` is set (and reopened when the server ends it, as a page
    does)."""
    codes, answered = [], threading.Barrier(count + 1)

    def one():
        session = requests.Session()
        session.cookies.update(cookies)
        first = True
        while not stop.is_set():
            try:
                with session.get(f"{BASE}/events/jobs", stream=True, timeout=60) as response:
                    if first:
                        codes.append(response.status_code)
                        first = False
                        answered.wait()
                    if response.status_code != 200:
                        return
                    for _ in response.iter_lines():
                        if stop.is_set():
                            return
            except requests.RequestException:
                return

    for _ in range(count):
        threading.Thread(target=one, daemon=True).start()
    answered.wait()
    return codes


def percentiles(values):
    ms = sorted(1000 * v for v in values)
    pick = lambda q: ms[min(len(ms) - 1, int(round(q / 100 * (len(ms) - 1))))]  # noqa: E731
    return f"p50 {pick(50):6.1f} ms   p99 {pick(99):6.1f} ms   max {ms[-1]:6.1f} ms"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--streams", type=int, default=64)
    parser.add_argument("--probes", type=int, default=200)
    args = parser.parse_args()

    data_dir = Path(tempfile.mkdtemp(prefix="ourvidz-bench-streams-"))
    env = common.stack_env(BENCH_DB, data_dir, PORT)
    token, = common.reset_stack(env, BENCH_DB, ["bench"])
    common.manage(env, "shell", "-c", "from django.contrib.auth.models import User; "
                                      f"u = User.objects.get(username='bench'); u.set_password({PASSWORD!r}); u.save()")
    print(f"stack log: {data_dir / 'stack.log'}")
    with open(data_dir / "stack.log", "wb") as log:
        web = common.Procs(["web"], env, log)
        stop = threading.Event()
        try:
            common.wait_http(PORT, token)
            prober = requests.Session()
            quiet = probe(prober, token, args.probes)
            codes = hold_streams(login().cookies, args.streams, stop)
            time.sleep(1)
            loaded = probe(prober, token, args.probes)
        finally:
            stop.set()
            web.stop()
    served, refused = codes.count(200), codes.count(429)
    print(f"\nOne user opens {args.streams} live streams: {served} served, {refused} refused with 429 (the page "
          f"polls instead), {len(codes) - served - refused} other")
    for path in ("/healthz", "/api/jobs/"):
        print(f"  {path:12} no streams     {percentiles(quiet[path])}")
        print(f"  {'':12} streams held  {percentiles(loaded[path])}   (goal: p99 < 200 ms)")


if __name__ == "__main__":
    main()
