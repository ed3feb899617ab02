"""Plain helpers for tests: users with known passwords, and running project processes."""

import functools
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.hashers import make_password
from django.db import connection

from generation import presence
from generation.models import Job

ROOT = Path(__file__).resolve().parent.parent

# The passwords of conftest's users alice, bob and charlie.
ALICE_PASSWORD = "pw-alice-123"
BOB_PASSWORD = "pw-bob-123"
CHARLIE_PASSWORD = "pw-charlie-123"
PASSWORDS = {"alice": ALICE_PASSWORD, "bob": BOB_PASSWORD, "charlie": CHARLIE_PASSWORD}


@functools.cache
def password_hash(password):
    """`password` hashed by the project's hasher once per process: a hash costs about 0.3 s."""
    return make_password(password)


def create_user(username, password=None, **fields):
    """A saved user; with a password, logging in checks it with the project's hasher as in production."""
    if password is None:
        return get_user_model().objects.create_user(username, **fields)
    return get_user_model().objects.create(username=username, password=password_hash(password), **fields)


def database_url_for_tests():
    """DATABASE_URL naming the test database that pytest-django created."""
    parts = urlsplit(os.environ["DATABASE_URL"])
    return urlunsplit(parts._replace(path="/" + connection.settings_dict["NAME"]))


def worker_env(**extra):
    """Environment for project processes: the test database, the tiny models, this media folder."""
    env = dict(os.environ)
    env.update({
        "DATABASE_URL": database_url_for_tests(),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "DJANGO_SECRET_KEY": settings.SECRET_KEY,
        "SDXL_MODEL_PATH": settings.SDXL_MODEL_PATH,
        "SDXL_CONFIG_PATH": settings.SDXL_CONFIG_PATH,
        "SDXL_TOKENIZER_PATH": settings.SDXL_TOKENIZER_PATH,
        "SDXL_IP_ADAPTER_PATH": settings.SDXL_IP_ADAPTER_PATH,
        "WAN_MODEL_PATH": settings.WAN_MODEL_PATH,
        "WAN_I2V_MODEL_PATH": settings.WAN_I2V_MODEL_PATH,
        "ENHANCER_MODEL_PATH": settings.ENHANCER_MODEL_PATH,
        "MEDIA_ROOT": str(settings.MEDIA_ROOT),
        "STORAGE_BACKEND": settings.STORAGE_BACKEND,
        "OURVIDZ_PROFILE": "dev",
        "PROGRESS_INTERVAL": "0",
        "PYTHONUNBUFFERED": "1",
    })
    env.update({k: str(v) for k, v in extra.items()})
    return env


def supervise_command(*names):
    """The command `make run` runs the Procfile's processes with (all of them, or those named)."""
    return [sys.executable, "-m", "ourvidz.supervise", *names]


class Stack:
    """Processes from the Procfile run by the supervisor, as `make run` runs them (or one `command` of a
    test's)."""

    def __init__(self, names, env, log_path, command=None):
        self.log_path = log_path
        self.log = open(log_path, "wb")
        command = command or supervise_command(*names)
        self.process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT,
                                        start_new_session=True)

    def output(self):
        return Path(self.log_path).read_text(errors="replace")

    def wait_for(self, condition, timeout, what):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the stack exited while waiting for {what}:\n{self.output()[-4000:]}")
            if condition():
                return
            time.sleep(0.2)
        raise TimeoutError(f"timed out waiting for {what}:\n{self.output()[-4000:]}")

    def wait_for_job(self, job_id, timeout=120):
        """Wait until the job has finished (completed, failed or cancelled) and return it."""
        self.wait_for(lambda: Job.objects.get(pk=job_id).is_finished, timeout, f"job {job_id}")
        return Job.objects.get(pk=job_id)

    def stop(self):
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGINT)  # what Ctrl-C does to `make run`
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self.log.close()


def sdxl_worker_command(queue, name):
    """The Procfile's SDXL worker, consuming `queue` under the node name `name`."""
    return [str(Path(sys.executable).with_name("celery")), "-A", "ourvidz", "worker", "--include", "sdxl_tasks.tasks",
            "-Q", queue, "-n", f"{name}@%h", "--concurrency", "1", "--without-mingle", "--without-gossip",
            "--loglevel", "INFO"]


def pools_online(queues=("sdxl_queue", "wan_queue")):
    served = {q for w in presence.online() for q in w.get("queues", [])}
    return all(q in served for q in queues)
