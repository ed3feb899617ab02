"""More workers on one host, and added hosts: one command per worker (`make worker POOL=sdxl GPU=1`, i.e.
`python -m ourvidz.worker`, and deploy/'s units), a node name no live worker holds, each worker's share of the
host's CPU threads, and `setup --pool` that prepares a worker host without migrating the shared database."""

import json
import os
import socket
import subprocess
import sys
import threading
import uuid
from urllib.parse import urlsplit, urlunsplit

import psycopg2
import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import override_settings
from helpers import ROOT, Stack, database_url_for_tests, sdxl_worker_command, worker_env

from generation import brokers, presence
from ourvidz import worker
from ourvidz.management.commands.setup import web_address
from ourvidz.supervise import STOP_GRACE_SECONDS, read_procfile

REAL_PREFIX = "ourvidz:worker:"  # what worker processes write (tests without workers see a sandbox's prefix)


class LiveHolder:
    """The heartbeat of a live worker named `name` (pid 4242) in worker processes' keyspace, renewed every second
    by a thread, as a running worker renews its own."""

    def __init__(self, name):
        self.key, self.stopped = REAL_PREFIX + name, threading.Event()
        self.beat()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def beat(self):
        brokers.client().set(self.key, json.dumps({"name": self.key, "queues": [], "pid": 4242}), ex=6)

    def run(self):
        while not self.stopped.wait(1):
            self.beat()

    def stop(self):
        self.stopped.set()
        self.thread.join()
        brokers.client().delete(self.key)


# --- one command per worker ---------------------------------------------------------------------------------

def test_a_worker_is_named_for_its_pool_and_gpu():
    assert worker.plan("sdxl", gpu=1) == ("sdxl", "sdxl-gpu1", "1")
    assert worker.plan("sdxl-gpu1") == ("sdxl", "sdxl-gpu1", "1")  # systemd's ourvidz-worker@sdxl-gpu1
    assert worker.plan("wan") == ("wan", "wan", None)  # the GPUs it sees (a container's own)
    assert worker.plan("wan", name="wan-b") == ("wan", "wan-b", None)
    assert worker.plan("sdxl", gpu=2, name="big") == ("sdxl", "big", "2")
    for args, error in [(("video",), "not a pool"), (("sdxl-gpu1",), "--gpu says 2"),
                        (("sdxl",), "letters, digits")]:
        with pytest.raises(ValueError, match=error):
            worker.plan(*args, gpu=2 if error.startswith("--gpu") else None,
                        name="a@b" if error.startswith("letters") else None)


def test_the_procfile_line_runs_the_worker_under_its_name_on_its_gpu(tmp_path):
    # The Procfile's sdxl line, with a script that prints what celery would get in place of celery.
    show = "import os, sys; print(os.environ.get('CUDA_VISIBLE_DEVICES'), *sys.argv[1:])"
    line = read_procfile(ROOT / "Procfile")["sdxl"].replace("celery", f'{sys.executable} -c "{show}"', 1)
    env = worker.environment(*worker.plan("sdxl", gpu=1), {"PATH": os.environ["PATH"]})
    out = subprocess.run(["/bin/sh", "-c", "exec " + line], env=env, capture_output=True, text=True, check=True).stdout
    assert out.startswith("1 ") and "-n sdxl-gpu1@%h" in out and "-Q sdxl_queue" in out
    out = subprocess.run(["/bin/sh", "-c", "exec " + line], env={"PATH": os.environ["PATH"]}, capture_output=True,
                         text=True, check=True).stdout
    assert out.startswith("None ") and "-n sdxl@%h" in out  # `make run`'s worker, as before


@pytest.mark.workers
@pytest.mark.django_db(transaction=True)
def test_make_worker_prepares_its_pool_only_and_starts_a_worker_under_its_own_name(tmp_path, monkeypatch):
    """`python -m ourvidz.worker sdxl --gpu 7` as `make worker POOL=sdxl GPU=7` runs it, on a host without models:
    `setup --pool sdxl` builds the SDXL ones (not WAN's), then the worker comes online as sdxl-gpu7@<host>."""
    monkeypatch.setattr(presence, "KEY_PREFIX", REAL_PREFIX)  # the real worker's heartbeat, not a sandbox's
    models = tmp_path / "models"
    env = worker_env(OURVIDZ_MODELS_DIR=models, WORKER_THREADS=1)
    for name in ("SDXL_MODEL_PATH", "SDXL_CONFIG_PATH", "SDXL_IP_ADAPTER_PATH", "SDXL_TOKENIZER_PATH",
                 "WAN_MODEL_PATH", "WAN_I2V_MODEL_PATH", "ENHANCER_MODEL_PATH"):
        del env[name]  # the defaults: under OURVIDZ_MODELS_DIR
    node = f"sdxl-gpu7@{socket.gethostname()}"
    stack = Stack([], env, tmp_path / "worker.log",
                  command=[sys.executable, "-m", "ourvidz.worker", "sdxl", "--gpu", "7", "--supervise"])
    try:
        stack.wait_for(lambda: any(w["name"] == node and w["loaded"] for w in presence.online()), 120, node)
        output = stack.output()
        assert "Building the tiny development model for SDXL_MODEL_PATH" in output
        assert sorted(p.name for p in models.iterdir()) == ["sdxl-ip-adapter-tiny", "sdxl-tiny"]
        assert f"{node} uses 1 torch threads (WORKER_THREADS)" in output
    finally:
        stack.stop()


# --- a node name held by a live worker -------------------------------------------------------------------------

@pytest.mark.django_db(transaction=True)
def test_a_worker_refuses_a_node_name_a_live_worker_holds(tmp_path):
    name = f"dup-{uuid.uuid4().hex[:8]}"
    holder = LiveHolder(f"{name}@{socket.gethostname()}")
    try:
        result = subprocess.run(sdxl_worker_command("sdxl_queue.unused", name), cwd=ROOT, env=worker_env(),
                                capture_output=True, text=True, timeout=120)
        output = result.stdout + result.stderr
        assert result.returncode != 0, output
        assert (f"worker {name}@{socket.gethostname()} not started: the node name {name}@{socket.gethostname()} "
                "is held by a live worker (pid 4242)") in output
        assert json.loads(brokers.client().get(holder.key))["pid"] == 4242  # the live one's heartbeat untouched
    finally:
        holder.stop()


def test_a_dead_workers_heartbeat_does_not_hold_its_name(sandbox):
    """A worker restarted after a crash finds its old heartbeat, not renewed: it takes the name. Its own pid, or
    no heartbeat at all, passes at once."""
    from generation.worker import node

    name = sandbox.worker("sdxl")  # written once, never renewed: the worker died
    node.claim_name(name, os.getpid(), watch=0)  # its own
    node.claim_name(f"nobody@{sandbox.tag}", 1, watch=0)
    node.claim_name(name, 1, watch=1)  # another pid, silent for a second: dead


def test_a_renewed_heartbeat_holds_its_name(sandbox):
    from generation.worker import node

    name = sandbox.worker("sdxl")
    renew = threading.Timer(1.5, sandbox.worker, ["sdxl", name])
    renew.start()
    with pytest.raises(node.NameTaken, match=f"the node name {name} is held by a live worker"):
        node.claim_name(name, 1, watch=3)
    renew.join()


# --- the thread budget --------------------------------------------------------------------------------------------

def test_torch_threads_are_the_hosts_cores_shared_among_its_workers(sandbox, monkeypatch):
    from generation.worker import node

    monkeypatch.setattr(node, "cores", lambda: 16)
    assert node.thread_budget("sdxl-gpu0@box")[0] == 16  # alone, even before its own heartbeat
    sandbox.worker("sdxl", "sdxl-gpu0@box")
    sandbox.worker("sdxl", "sdxl-gpu1@box")
    sandbox.worker("wan", "wan@box")
    sandbox.worker("sdxl", "sdxl@another-box")
    assert node.thread_budget("sdxl-gpu0@box") == (5, "16 cores, 3 workers on box")
    with override_settings(WORKER_THREADS=12):
        assert node.thread_budget("sdxl-gpu0@box") == (12, "WORKER_THREADS")


# --- setup ----------------------------------------------------------------------------------------------------------

@pytest.fixture
def empty_database(db):
    """The URL of a database with no tables, on the test server; dropped afterwards."""
    test_url = urlsplit(database_url_for_tests())
    name = f"{test_url.path.lstrip('/')}_empty"
    server = psycopg2.connect(urlunsplit(test_url._replace(path="/postgres")))
    server.autocommit = True
    with server.cursor() as cursor:
        cursor.execute(f'DROP DATABASE IF EXISTS "{name}"')
        cursor.execute(f'CREATE DATABASE "{name}"')
    yield urlunsplit(test_url._replace(path=f"/{name}"))
    with server.cursor() as cursor:
        cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    server.close()


def test_setup_for_a_pool_never_migrates_and_refuses_an_unmigrated_database(empty_database, tmp_path):
    url = empty_database
    env = {**worker_env(OURVIDZ_MODELS_DIR=tmp_path), "DATABASE_URL": url}
    result = subprocess.run([sys.executable, "manage.py", "setup", "--pool", "sdxl"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert "unapplied migrations: run `manage.py setup` on the web host first" in result.stderr
    with psycopg2.connect(url) as db, db.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'")
        assert cursor.fetchone()[0] == 0  # not a table made
    assert not list(tmp_path.iterdir())  # nor a model built


@pytest.mark.django_db
def test_setup_for_a_pool_checks_that_pools_model_paths(monkeypatch, tmp_path):
    monkeypatch.setenv("SDXL_MODEL_PATH", str(tmp_path / "missing"))
    with override_settings(SDXL_MODEL_PATH=str(tmp_path / "missing")):
        with pytest.raises(CommandError, match="SDXL_MODEL_PATH is set to .*missing, which does not exist"):
            call_command("setup", pool=["sdxl"])


def test_setup_prints_the_address_the_site_answers_at(monkeypatch):
    monkeypatch.setenv("WEB_BIND", "10.0.0.5:8080")
    assert web_address() == "http://10.0.0.5:8080"
    monkeypatch.setenv("WEB_BIND", "0.0.0.0:8000")
    assert web_address() == f"http://{socket.getfqdn()}:8000"
    monkeypatch.delenv("WEB_BIND")
    assert web_address() == "http://127.0.0.1:8000"
    with override_settings(CSRF_TRUSTED_ORIGINS=["https://vidz.example.com"]):
        assert web_address() == "https://vidz.example.com"  # behind the TLS proxy


# --- deploy/ ------------------------------------------------------------------------------------------------------

def test_systemd_worker_unit_runs_one_worker_by_name_and_stops_gracefully():
    import configparser

    unit = configparser.ConfigParser(interpolation=None)
    unit.optionxform = str
    unit.read(ROOT / "deploy" / "systemd" / "ourvidz-worker@.service")
    service = unit["Service"]
    assert service["ExecStart"] == "/opt/ourvidz/.venv/bin/python -m ourvidz.worker %i"
    assert worker.plan("sdxl-gpu1") == ("sdxl", "sdxl-gpu1", "1")  # %i, e.g. ourvidz-worker@sdxl-gpu1
    assert (service["KillMode"], service["KillSignal"], service["TimeoutStopSec"], service["Restart"]) == (
        "mixed", "SIGTERM", str(STOP_GRACE_SECONDS), "on-failure")


def test_compose_worker_file_runs_one_worker_on_its_gpu():
    import yaml

    text = (ROOT / "deploy" / "docker-compose.worker.yml").read_text()
    # What Compose makes of it for POOL=sdxl GPU=1 WORKER_HOST=gpu-07 (its interpolation, for these forms).
    for variable, value in {"POOL": "sdxl", "GPU": "1", "WORKER_HOST": "gpu-07"}.items():
        text = text.replace(f"${{{variable}}}", value)
        for tail in (":?set POOL to sdxl or wan}", ":?set GPU to the GPU's index}", ":?set WORKER_HOST to this "
                     "machine's name}"):
            text = text.replace(f"${{{variable}{tail}", value)
    service = yaml.safe_load(text)["services"]["worker"]
    assert service["entrypoint"] + service["command"] == ["python", "-m", "ourvidz.worker", "sdxl", "--name",
                                                          "sdxl-gpu1"]
    assert service["hostname"] == "gpu-07"
    assert service["deploy"]["resources"]["reservations"]["devices"][0]["device_ids"] == ["1"]
    assert "-d sdxl-gpu1@$$HOSTNAME" in service["healthcheck"]["test"][1]
    assert service["stop_grace_period"] == f"{STOP_GRACE_SECONDS}s" and service["init"] is True
    assert service["restart"] == "unless-stopped"
