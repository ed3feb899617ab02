"""Several hosts, one installation: two workers of a pool from separate data directories share the work through the
shared PostgreSQL, Redis and S3 server (moto, on loopback), and a host whose settings or storage are not the
installation's refuses to start, naming the variable (generation.installation)."""

import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
import redis
from django.core.exceptions import ImproperlyConfigured
from helpers import ROOT, Stack, sdxl_worker_command, worker_env

from generation import installation, presence, storage, submission
from generation.models import Image, Installation

# Read before the sandbox fixture gives this process a key prefix of its own: the workers write under this one.
HEARTBEATS = presence.KEY_PREFIX
HOST = socket.gethostname()


@pytest.fixture
def fresh_storage():
    """Storage built anew from the settings a test changes (it is kept per backend name)."""
    storage._storage.cache_clear()
    yield
    storage._storage.cache_clear()


@pytest.fixture
def no_installation(db):
    """No installation recorded yet (the session's workers recorded theirs in the test database)."""
    Installation.objects.all().delete()


# --- the record and the check, in this process ------------------------------------------------------------------

def test_the_first_process_records_the_installation_and_the_web_tier_keeps_what_matches(
        no_installation, tmp_path, settings):
    settings.MEDIA_ROOT = tmp_path / "shared"
    installation.check_worker("sdxl-a@host-a")  # nothing has run setup yet: this worker's settings are recorded
    first = Installation.objects.get()
    assert (first.recorded_by, first.storage_backend, first.storage_endpoint) == ("sdxl-a@host-a", "local", "")
    assert first.visibility_timeout == installation.visibility_timeout()
    assert (tmp_path / "shared" / installation.BUCKET / first.marker).read_text() == first.marker

    kept = installation.record("web@host-w")  # the web tier starts with the same settings and storage
    assert (kept.marker, kept.recorded_by) == (first.marker, "sdxl-a@host-a")
    installation.check_worker("sdxl-b@host-b")
    # The probe objects are gone again: only the marker is left.
    assert [p.name for p in (tmp_path / "shared" / installation.BUCKET).iterdir()] == [first.marker]

    settings.MEDIA_ROOT = tmp_path / "moved"  # the web tier's storage changed: recorded anew, with a new marker
    moved = installation.record("web@host-w")
    assert moved.recorded_by == "web@host-w" and moved.marker != first.marker
    assert (tmp_path / "moved" / installation.BUCKET / moved.marker).exists()


def test_a_worker_starting_while_the_database_is_down_waits_for_it(no_installation, tmp_path, settings,
                                                                   monkeypatch):
    # Exiting instead, the worker would be given up by its supervisor after a few quick restarts.
    from django.db import OperationalError

    settings.MEDIA_ROOT = tmp_path
    installation.record("web@host-w")
    reads, pauses, real_filter = [], [], Installation.objects.filter

    def filter_while_down(*args, **kwargs):
        reads.append(1)
        if len(reads) <= 3:
            raise OperationalError("connection refused")
        return real_filter(*args, **kwargs)

    monkeypatch.setattr(Installation.objects, "filter", filter_while_down)
    monkeypatch.setattr(installation.time, "sleep", pauses.append)
    # Its broken connection is dropped before each new try (not this test's, which holds its transaction).
    monkeypatch.setattr(installation, "connection", type("Connection", (), {"close": lambda self: None})())
    installation.check_worker("sdxl@host-b")  # started once the database answered
    assert (len(reads), pauses) == (4, [0.5, 1.0, 2.0])


def test_a_worker_whose_settings_differ_is_refused_naming_the_variable(no_installation, tmp_path, settings):
    settings.MEDIA_ROOT = tmp_path
    installation.record("web@host-w")

    settings.OURVIDZ_PROFILE = "production"
    with pytest.raises(ImproperlyConfigured, match=r"^OURVIDZ_PROFILE is 'production' here but 'dev' for this "
                                                   r"installation \(recorded by web@host-w\)\. Every host must"):
        installation.check_worker("sdxl@host-b")
    settings.OURVIDZ_PROFILE = "dev"

    recorded_timeout = installation.visibility_timeout()
    settings.CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": recorded_timeout + 1800}
    settings.SECRET_KEY = "a key of this host's own"
    with pytest.raises(ImproperlyConfigured) as refused:
        installation.check_worker("sdxl@host-b")
    message = str(refused.value)
    assert (f"CELERY_VISIBILITY_TIMEOUT is {recorded_timeout + 1800} here but {recorded_timeout} for this "
            "installation") in message
    assert "DJANGO_SECRET_KEY differs from the one for this installation (recorded by web@host-w)" in message
    assert "a key of this host's own" not in message


def test_a_worker_whose_storage_is_a_disk_of_its_own_is_refused(no_installation, tmp_path, settings):
    settings.MEDIA_ROOT = tmp_path / "web-host"
    recorded = installation.record("web@host-w")
    settings.MEDIA_ROOT = tmp_path / "gpu-host"  # local storage on both, but not the same folder
    with pytest.raises(ImproperlyConfigured) as refused:
        installation.check_worker("sdxl@host-b")
    assert str(refused.value).startswith(
        f"storage (the local folder {tmp_path / 'gpu-host'}) is not this installation's: it lacks the marker "
        f"installation/{recorded.marker} that web@host-w put in its storage")
    assert list((tmp_path / "gpu-host" / installation.BUCKET).iterdir()) == []  # its probe was deleted


def test_a_worker_with_a_visibility_timeout_shorter_than_the_longest_job_is_refused(no_installation, settings):
    settings.CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": 60}
    with pytest.raises(ImproperlyConfigured, match=r"^CELERY_VISIBILITY_TIMEOUT \(60 s\) must exceed the longest"):
        installation.check_worker("sdxl@host-b")
    assert not Installation.objects.exists()  # nor did it record its settings


# --- real workers ------------------------------------------------------------------------------------------------

def test_a_worker_process_with_a_short_visibility_timeout_does_not_start(db):
    """Any worker (here one like housekeeping, quick to start): it would hand other hosts' running jobs out again."""
    command = [str(Path(sys.executable).with_name("celery")), "-A", "ourvidz", "worker", "-Q", "scale-out-test",
               "-n", "short-timeout@%h", "--concurrency", "1", "--without-mingle", "--without-gossip"]
    result = subprocess.run(command, cwd=ROOT, env=worker_env(CELERY_VISIBILITY_TIMEOUT=60), capture_output=True,
                            text=True, timeout=90)
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert f"worker short-timeout@{HOST} not started: CELERY_VISIBILITY_TIMEOUT (60 s) must exceed" in output
    assert "ready." not in output


@pytest.mark.django_db(transaction=True)
def test_two_workers_from_separate_data_directories_share_a_pool_and_a_mis_set_one_refuses(
        s3_endpoint, tmp_path, settings, fresh_storage, tiny_models, alice):
    minio = {"STORAGE_BACKEND": "minio", "MINIO_ENDPOINT": s3_endpoint, "MINIO_ACCESS_KEY": "testing",
             "MINIO_SECRET_KEY": "testing-secret", "MINIO_BUCKET_PREFIX": "scale-"}
    # The web tier (this process) records the installation: MinIO.
    for name, value in minio.items():
        setattr(settings, name, value)
    Installation.objects.all().delete()
    installation.record(f"web@{HOST}")
    # A Redis database of this test's own stands for the installation's Redis: the session's workers take nothing.
    broker = worker_env()["REDIS_URL"].rsplit("/", 1)[0] + "/11"
    server = redis.Redis.from_url(broker)
    server.flushdb()

    def host_env(name, **extra):
        data = tmp_path / name
        return worker_env(REDIS_URL=broker, OURVIDZ_DATA_DIR=data, MEDIA_ROOT=data / "media", **{**minio, **extra})

    names = [f"sdxl-a@{HOST}", f"sdxl-b@{HOST}"]
    workers = [Stack([], host_env(f"host-{name[5]}"), tmp_path / f"{name[:6]}.log",
                     command=sdxl_worker_command("sdxl_queue", name.partition("@")[0])) for name in names]
    try:
        def ready():  # online (consuming) and its model loaded
            if workers[1].process.poll() is not None:
                raise RuntimeError(f"{names[1]} exited:\n{workers[1].output()[-4000:]}")
            return all(server.exists(HEARTBEATS + name) and server.exists(HEARTBEATS + name + presence.LOADED_SUFFIX)
                       for name in names)

        workers[0].wait_for(ready, 120, "both SDXL workers")
        jobs = [submission.build_job(alice, "sdxl_image_fast", f"a harbour {i}", num_images=1, seed=i)
                for i in range(8)]
        for job in jobs:
            job.save()
        # A web process of the installation releases them (as a submission does); the workers release the rest as
        # they finish.
        subprocess.run([sys.executable, "manage.py", "shell", "-c",
                        "from generation import scheduler; scheduler.kick('sdxl_queue')"],
                       cwd=ROOT, env=host_env("host-w"), check=True, capture_output=True, timeout=60)
        done = [workers[0].wait_for_job(job.pk) for job in jobs]
    finally:
        for worker in workers:
            worker.stop()
    assert [job.status for job in done] == ["completed"] * 8, [job.error_message for job in done]
    assert {job.worker.partition("/")[0] for job in done} == set(names)  # both took jobs, each job records its worker
    image = Image.objects.get(job=jobs[0])
    with urllib.request.urlopen(storage.signed_url(image.bucket, image.image_path)) as response:
        assert response.read().startswith(b"\x89PNG")  # stored where the web tier hands out URLs

    # A third host started without STORAGE_BACKEND (local storage, a disk of its own) refuses to start.
    env = host_env("host-c")
    del env["STORAGE_BACKEND"]
    result = subprocess.run(sdxl_worker_command("sdxl_queue", "sdxl-c"), cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=120)
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert (f"worker sdxl-c@{HOST} not started: STORAGE_BACKEND is 'local' here but 'minio' for this installation "
            f"(recorded by web@{HOST})") in output
    assert not server.exists(HEARTBEATS + f"sdxl-c@{HOST}")
