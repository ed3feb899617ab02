"""`make run`'s supervision: processes started again when they die, a graceful stop that lets running jobs
finish, nothing left behind when the supervisor is killed, and an embedded Redis that keeps its data and asks
for its password.

Real processes throughout: Procfiles of the tests' own with small Python scripts, the real `web` and
`housekeeping` processes where their children matter, and `python -m ourvidz.services` with its embedded
redis-server.
"""

import json
import os
import re
import signal
import socket
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import redis
import requests
from faults import children
from helpers import ROOT, worker_env
from redis.backoff import NoBackoff
from redis.retry import Retry

from ourvidz.supervise import STOP_GRACE_SECONDS, read_procfile

PYTHON = sys.executable


def client(port, password=None):
    """A Redis client on `port` that fails at once when nothing answers (redis-py retries by default)."""
    return redis.Redis(port=port, password=password, retry=Retry(NoBackoff(), 0))


def write_script(path, source):
    path.write_text(textwrap.dedent(source))
    return path


class Supervisor:
    """`python -m ourvidz.supervise NAMES` in a session of its own (as `make run` in a terminal), on a Procfile
    of the test's own (text) or the project's."""

    def __init__(self, tmp_path, procfile=None, names=(), env=None):
        args = list(names)
        if procfile is not None:
            (tmp_path / "Procfile").write_text(textwrap.dedent(procfile))
            args = ["-f", str(tmp_path / "Procfile"), *args]
        self.log_path = tmp_path / "supervise.log"
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen([PYTHON, "-m", "ourvidz.supervise", *args], cwd=ROOT,
                                            env={**os.environ, **(env or {})}, stdout=log,
                                            stderr=subprocess.STDOUT, start_new_session=True)

    def output(self):
        return self.log_path.read_text(errors="replace")

    def pids(self, name):
        """The pids `name` was started with, in order."""
        return [int(pid) for pid in re.findall(rf"\| {name} started \(pid (\d+)\)", self.output())]

    def wait_for(self, condition, what, timeout=20):
        deadline = time.monotonic() + timeout
        while not condition():
            assert time.monotonic() < deadline, f"timed out waiting for {what}:\n{self.output()}"
            time.sleep(0.05)

    def stop(self):
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


@pytest.fixture
def supervisors():
    started = []

    def start(*args, **kwargs):
        started.append(Supervisor(*args, **kwargs))
        return started[-1]

    yield start
    for supervisor in started:
        supervisor.stop()


def alive(pid):
    """True while `pid` runs (a zombie waiting for its parent to collect it is not running)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def descendants(pid):
    found = children(pid)
    for child in list(found):
        found += descendants(child)
    return found


def wait_for_descendants(pid, count, timeout=20):
    deadline = time.monotonic() + timeout
    while len(descendants(pid)) < count:
        assert time.monotonic() < deadline, f"{pid} has not {count} descendants"
        time.sleep(0.05)
    return descendants(pid)


def wait_until_gone(pids, timeout=10):
    deadline = time.monotonic() + timeout
    while any(alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    return [pid for pid in pids if alive(pid)]


# --- restarts -----------------------------------------------------------------------------------

def test_a_process_that_dies_is_started_again(tmp_path, supervisors):
    runs = tmp_path / "runs"
    # Dies at its first run, then keeps running; `steady` is not disturbed meanwhile.
    write_script(tmp_path / "flaky.py", f"""
        import sys, time
        with open({str(runs)!r}, "a") as f:
            f.write("run\\n")
        if open({str(runs)!r}).read().count("run") == 1:
            sys.exit(5)
        time.sleep(60)
    """)
    supervisor = supervisors(tmp_path, f"""
        flaky: {PYTHON} {tmp_path / "flaky.py"}
        steady: {PYTHON} -c "import time; time.sleep(60)"
    """)
    supervisor.wait_for(lambda: len(supervisor.pids("flaky")) == 2, "flaky's second start")
    assert "flaky exited (status 5) after" in supervisor.output()
    assert "starting it again in 1 s" in supervisor.output()
    assert [alive(pid) for pid in supervisor.pids("flaky")] == [False, True]
    assert len(supervisor.pids("steady")) == 1 and alive(supervisor.pids("steady")[0])


def test_a_process_that_keeps_dying_at_once_is_given_up(tmp_path, supervisors):
    supervisor = supervisors(tmp_path, f"""
        broken: {PYTHON} -c "import sys; print('cannot start'); sys.exit(3)"
        steady: {PYTHON} -c "import time; time.sleep(60)"
    """)
    supervisor.wait_for(lambda: "given up" in supervisor.output(), "broken to be given up")
    output = supervisor.output()
    assert "broken exited (status 3) within 30 s of starting 3 times in a row: given up" in output
    assert len(supervisor.pids("broken")) == 3 and output.count("broken    | cannot start") == 3
    assert "starting it again in 1 s" in output and "starting it again in 2 s" in output
    assert supervisor.process.poll() is None  # the others go on
    time.sleep(1.5)
    assert len(supervisor.pids("broken")) == 3

    # Alone, nothing is left to run: the supervisor exits, saying so.
    (tmp_path / "alone").mkdir()
    alone = supervisors(tmp_path / "alone", f"broken: {PYTHON} -c 'import sys; sys.exit(3)'")
    assert alone.process.wait(20) == 1
    assert "nothing left to run" in alone.output()


# --- stopping -----------------------------------------------------------------------------------

def job_worker(tmp_path):
    """A script shaped like a Celery worker: `worker.py SECONDS warm|ignore` runs a job of SECONDS in a child
    (its 'pool'), which records every signal it gets. On SIGTERM the main process waits for the job (warm) or
    does nothing (ignore). Both log what they do to the returned file."""
    events = tmp_path / "events"
    log = f"""
        def log(text):
            with open({str(events)!r}, "a") as f:
                f.write(text + "\\n")
    """
    write_script(tmp_path / "pool_child.py", f"""
        import signal, sys, time
        {log}
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda signum, frame: log("child got " + signal.Signals(signum).name))
        log("job started")
        end = time.monotonic() + float(sys.argv[1])
        while time.monotonic() < end:
            time.sleep(0.05)
        log("job finished")
    """)
    write_script(tmp_path / "worker.py", f"""
        import signal, subprocess, sys, time
        {log}
        def warm_shutdown(signum, frame):
            log("main got " + signal.Signals(signum).name)
            child.wait()  # the running job finishes
            log("main exits")
            sys.exit(0)

        child = subprocess.Popen([sys.executable, {str(tmp_path / "pool_child.py")!r}, sys.argv[1]])
        if sys.argv[2] == "warm":
            signal.signal(signal.SIGTERM, warm_shutdown)
        else:
            signal.signal(signal.SIGTERM, lambda signum, frame: log("main ignores it"))
        while True:
            time.sleep(1)
    """)
    return events


@pytest.mark.parametrize("how", ["SIGTERM", "Ctrl-C"])
def test_stopping_sends_sigterm_to_main_processes_only_and_waits_for_their_jobs(tmp_path, supervisors, how):
    events = job_worker(tmp_path)
    supervisor = supervisors(tmp_path, f"""
        worker: {PYTHON} {tmp_path / "worker.py"} 2.5 warm
        web: {PYTHON} -c "import time; time.sleep(60)"
    """, env={"STOP_GRACE_SECONDS": "30"})
    supervisor.wait_for(lambda: events.exists() and "job started" in events.read_text(), "the job to start")
    [worker] = supervisor.pids("worker")
    [pool_child] = children(worker)
    if how == "SIGTERM":
        os.kill(supervisor.process.pid, signal.SIGTERM)
    else:
        os.killpg(supervisor.process.pid, signal.SIGINT)  # Ctrl-C: to the terminal's foreground group
    assert supervisor.process.wait(20) == 0

    # The main process waited for its child's job, and exited by itself within the grace period.
    assert events.read_text().splitlines() == ["job started", "main got SIGTERM", "job finished", "main exits"]
    output = supervisor.output()
    assert "killing it" not in output
    assert f"{'SIGINT' if how == 'Ctrl-C' else 'SIGTERM'} received" in output
    assert "worker stopped (status 0)" in output and "web stopped (killed by SIGTERM)" in output
    assert not alive(worker) and not alive(pool_child)


def test_what_outlives_the_grace_period_is_killed(tmp_path, supervisors):
    events = job_worker(tmp_path)
    supervisor = supervisors(tmp_path, f"worker: {PYTHON} {tmp_path / 'worker.py'} 60 ignore",
                             env={"STOP_GRACE_SECONDS": "1"})
    supervisor.wait_for(lambda: events.exists() and "job started" in events.read_text(), "the job to start")
    [worker] = supervisor.pids("worker")
    [pool_child] = children(worker)
    os.kill(supervisor.process.pid, signal.SIGTERM)
    assert supervisor.process.wait(20) == 0
    assert events.read_text().splitlines() == ["job started", "main ignores it"]
    assert "worker: still running after 1 s: killing it" in supervisor.output()
    assert "worker stopped (killed by SIGKILL)" in supervisor.output()
    assert wait_until_gone([worker, pool_child], timeout=2) == []


def test_a_second_ctrl_c_kills_at_once(tmp_path, supervisors):
    events = job_worker(tmp_path)
    supervisor = supervisors(tmp_path, f"worker: {PYTHON} {tmp_path / 'worker.py'} 60 warm")
    supervisor.wait_for(lambda: events.exists() and "job started" in events.read_text(), "the job to start")
    os.killpg(supervisor.process.pid, signal.SIGINT)
    supervisor.wait_for(lambda: "main got SIGTERM" in events.read_text(), "the warm shutdown")
    os.killpg(supervisor.process.pid, signal.SIGINT)
    assert supervisor.process.wait(10) == 0
    assert "worker: a second signal: killing it" in supervisor.output()


# --- nothing left behind ------------------------------------------------------------------------

def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.django_db(transaction=True)
def test_killing_the_supervisor_with_sigkill_kills_every_process_it_started(tmp_path, supervisors):
    port = free_port()
    env = worker_env(WEB_BIND=f"127.0.0.1:{port}", WEB_WORKERS=2, OURVIDZ_DATA_DIR=tmp_path)
    supervisor = supervisors(tmp_path, names=["web", "housekeeping"], env=env)  # the project's Procfile

    def up():
        try:
            requests.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
        except requests.RequestException:
            return False
        # gunicorn's two workers, and the Celery worker's pool child
        return [len(children(pid)) for pid in supervisor.pids("web") + supervisor.pids("housekeeping")] == [2, 1]

    supervisor.wait_for(up, "web and housekeeping with their children", timeout=60)
    processes = descendants(supervisor.process.pid)
    assert len(processes) == 5
    os.kill(supervisor.process.pid, signal.SIGKILL)
    supervisor.process.wait()
    assert wait_until_gone(processes) == []


def services(tmp_path, command, embedded_postgres=False):
    """`python -m ourvidz.services -- COMMAND` with an embedded Redis in `tmp_path`, in a session of its own; the
    test database server stands in for the embedded PostgreSQL unless `embedded_postgres`."""
    unset = {"REDIS_URL", "DATABASE_URL"} if embedded_postgres else {"REDIS_URL"}
    environ = {k: v for k, v in os.environ.items() if k not in unset}
    environ.update(OURVIDZ_DATA_DIR=str(tmp_path))
    log = open(tmp_path / "services.log", "ab")
    process = subprocess.Popen([PYTHON, "-m", "ourvidz.services", "--", *command], cwd=ROOT, env=environ,
                               stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    log.close()
    return process


def redis_password(tmp_path):
    """The password of the embedded redis-server in `tmp_path`."""
    return (tmp_path / "redis" / "password").read_text()


def embedded_redis(tmp_path, timeout=20):
    """(port, pid) of the embedded redis-server in `tmp_path` once it answers."""
    state = tmp_path / "redis" / "redis.json"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if state.exists():
            known = json.loads(state.read_text())
            try:
                if alive(known["pid"]) and client(known["port"], redis_password(tmp_path)).ping():
                    return known["port"], known["pid"]
            except redis.ConnectionError:
                pass
        time.sleep(0.05)
    raise TimeoutError((tmp_path / "services.log").read_text())


def test_after_kill_9_of_make_runs_process_group_nothing_is_left_and_the_next_start_is_clean(tmp_path):
    (tmp_path / "Procfile").write_text(f"sleeper: {PYTHON} -c 'import time; time.sleep(60)'\n")
    command = [PYTHON, "-m", "ourvidz.supervise", "-f", str(tmp_path / "Procfile")]
    stack = services(tmp_path, command, embedded_postgres=True)
    port, redis_pid = embedded_redis(tmp_path)
    processes = wait_for_descendants(stack.pid, 3)  # Redis, the supervisor, the sleeper
    postgres = int((tmp_path / "pgdata" / "postmaster.pid").read_text().split()[0])
    os.killpg(stack.pid, signal.SIGKILL)  # what `kill -9 -PGID` of `make run` does
    stack.wait()
    assert redis_pid in processes and len(processes) == 3
    assert wait_until_gone(processes) == []
    assert alive(postgres)  # a daemon of pg_ctl's, not our child: the next start joins it

    # The next start is clean: Redis on the same port, no "Address already in use"; its stop stops PostgreSQL.
    again = services(tmp_path, command, embedded_postgres=True)
    try:
        assert embedded_redis(tmp_path)[0] == port
        wait_for_descendants(again.pid, 3)
        again.send_signal(signal.SIGTERM)
        assert again.wait(30) == 0
        assert wait_until_gone([postgres]) == []
    finally:
        if again.poll() is None:
            os.killpg(again.pid, signal.SIGKILL)
            again.wait()
        if alive(postgres):
            os.kill(postgres, signal.SIGQUIT)  # PostgreSQL's immediate shutdown: leave no server behind


# --- the embedded Redis -------------------------------------------------------------------------

def test_embedded_redis_keeps_its_data_across_a_stop_and_start(tmp_path):
    sleeper = [PYTHON, "-c", "import time; time.sleep(60)"]
    stack = services(tmp_path, sleeper)
    port, _ = embedded_redis(tmp_path)
    client(port, redis_password(tmp_path)).rpush("celery", "job-1", "job-2")
    stack.send_signal(signal.SIGTERM)  # as `make run` passes it on
    assert stack.wait(20) == 128 + signal.SIGTERM  # the command was stopped by SIGTERM
    with pytest.raises(redis.ConnectionError):
        client(port, redis_password(tmp_path)).ping()

    stack = services(tmp_path, sleeper)
    try:
        assert embedded_redis(tmp_path)[0] == port
        assert client(port, redis_password(tmp_path)).lrange("celery", 0, -1) == [b"job-1", b"job-2"]
    finally:
        stack.terminate()
        stack.wait(20)


def test_embedded_redis_comes_back_by_itself_after_being_killed(tmp_path):
    stack = services(tmp_path, [PYTHON, "-c", "import time; time.sleep(60)"])
    try:
        port, pid = embedded_redis(tmp_path)
        client(port, redis_password(tmp_path)).set("written", "before the kill")
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while embedded_redis(tmp_path)[1] == pid:
            assert time.monotonic() < deadline, "Redis did not come back"
            time.sleep(0.1)
        assert embedded_redis(tmp_path)[0] == port
        assert client(port, redis_password(tmp_path)).get("written") == b"before the kill"
        assert "the embedded redis-server (port" in (tmp_path / "services.log").read_text()
    finally:
        stack.terminate()
        stack.wait(20)


def test_embedded_redis_asks_for_the_password_that_the_command_is_given(tmp_path):
    # The command writes through the REDIS_URL it was given, then hands that URL over.
    script = ("import os, pathlib, redis, time; url = os.environ['REDIS_URL']; "
              "redis.Redis.from_url(url).set('written', 'by the command'); "
              f"pathlib.Path({str(tmp_path / 'url')!r}).write_text(url); time.sleep(60)")
    stack = services(tmp_path, [PYTHON, "-c", script])
    try:
        port, pid = embedded_redis(tmp_path)
        password = tmp_path / "redis" / "password"
        assert stat.S_IMODE(password.stat().st_mode) == 0o600
        assert stat.S_IMODE(password.parent.stat().st_mode) == 0o700  # and the data beside it
        with pytest.raises(redis.AuthenticationError):
            client(port).ping()  # any other process of the machine
        deadline = time.monotonic() + 20
        while not (tmp_path / "url").exists():
            assert stack.poll() is None and time.monotonic() < deadline, (tmp_path / "services.log").read_text()
            time.sleep(0.05)
        url = (tmp_path / "url").read_text()
        assert url == f"redis://:{password.read_text()}@127.0.0.1:{port}/0"
        assert redis.Redis.from_url(url).get("written") == b"by the command"
        assert password.read_text().encode() not in Path(f"/proc/{pid}/cmdline").read_bytes()  # `ps` shows it
    finally:
        stack.terminate()
        stack.wait(20)


# --- production: deploy/ ------------------------------------------------------------------------

def procfile_runner_output(tmp_path, command, name):
    """What `command` (a Procfile runner of deploy/, as a list) prints when `name`'s line in a Procfile of the
    test's own is an echo: proof that it runs that name's line, through the shell."""
    (tmp_path / "Procfile").write_text("other: echo wrong line\n"
                                       f"{name}: echo {name} runs with ${{GREETING:-a default}}\n")
    return subprocess.run(command, cwd=tmp_path, env={"PATH": os.environ["PATH"]}, capture_output=True,
                          text=True, timeout=10, check=True).stdout


def test_compose_file_runs_each_procfile_process_with_restarts_health_checks_and_grace(tmp_path):
    import yaml  # PyYAML, which drf-spectacular requires

    compose = yaml.safe_load((ROOT / "deploy" / "docker-compose.yml").read_text())
    services = compose["services"]
    procfile = read_procfile(ROOT / "Procfile")
    assert set(procfile) | {"postgres", "redis", "setup"} == set(services)
    for name in procfile:
        service = services[name]
        assert service["command"] == name
        # Compose turns $$ into $; then the entrypoint runs the Procfile's line for its command.
        entrypoint = [part.replace("$$", "$") for part in service["entrypoint"]]
        assert procfile_runner_output(tmp_path, [*entrypoint, name], name) == f"{name} runs with a default\n"
        assert service["init"] is True  # tini: SIGTERM to the main process only, zombies reaped
        assert service["restart"] == "unless-stopped"
        assert service["healthcheck"]["test"][0] in ("CMD", "CMD-SHELL")
        assert {"postgres", "redis", "setup"} <= set(service["depends_on"])
    for name in ("sdxl", "wan"):
        assert services[name]["stop_grace_period"] == f"{STOP_GRACE_SECONDS}s"  # the running job finishes
        assert f"inspect ping --timeout 20 -d {name}@$$HOSTNAME" in services[name]["healthcheck"]["test"][1]
        assert services[name]["environment"][f"{name.upper()}_CUDA_VISIBLE_DEVICES"] == ""
    assert "-d housekeeping@$$HOSTNAME" in services["housekeeping"]["healthcheck"]["test"][1]
    assert "/healthz" in services["web"]["healthcheck"]["test"][-1]
    assert "/healthcheck" in services["flower"]["healthcheck"]["test"][-1]
    assert "celerybeat-schedule" in services["beat"]["healthcheck"]["test"][-1]
    assert services["web"]["environment"]["WEB_BIND"] == "0.0.0.0:8000"
    assert services["redis"]["command"][:3] == ["redis-server", "--appendonly", "yes"]
    for name in ("postgres", "redis"):
        assert services[name]["restart"] == "unless-stopped" and "healthcheck" in services[name]
    assert services["setup"]["restart"] == "no"


def test_compose_health_checks_in_python_are_valid_python():
    import yaml

    services = yaml.safe_load((ROOT / "deploy" / "docker-compose.yml").read_text())["services"]
    for name in ("web", "beat", "flower"):
        test = services[name]["healthcheck"]["test"]
        assert test[:3] == ["CMD", "python", "-c"], name
        compile(test[3], name, "exec")


def test_systemd_unit_stops_gracefully_and_runs_the_procfile_line(tmp_path):
    import configparser
    import shlex

    unit = configparser.ConfigParser(interpolation=None)
    unit.optionxform = str
    unit.read(ROOT / "deploy" / "systemd" / "ourvidz@.service")
    service = unit["Service"]
    assert service["KillMode"] == "mixed"  # SIGTERM to the main process only, SIGKILL to the rest at the end
    assert service["KillSignal"] == "SIGTERM"
    assert service["TimeoutStopSec"] == str(STOP_GRACE_SECONDS)
    assert service["Restart"] == "on-failure"
    # systemd turns %i into the instance and $$ into $; the unit reads /opt/ourvidz/Procfile.
    command = shlex.split(service["ExecStart"].replace("%i", "web").replace("$$", "$")
                          .replace("/opt/ourvidz/Procfile", str(tmp_path / "Procfile")))
    assert procfile_runner_output(tmp_path, command, "web") == "web runs with a default\n"
