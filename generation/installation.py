"""The installation record: the settings every host must share, kept in the database, and a worker's check of them.

The web tier records its settings (`manage.py setup`, and each web process at start); every Celery worker compares
its own with them at start and refuses to start, naming the variable, when they differ. A worker also proves that
it can write, read and delete an object in storage, and that this storage holds the marker object the recording
process put there: a host whose storage is a disk of its own (STORAGE_BACKEND unset, say) would complete jobs whose
files nobody can fetch. With no record yet (nothing has run `setup`), the first process to start records its own.
"""

import hashlib
import json
import logging
import time
import uuid

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import DatabaseError, InterfaceError, OperationalError, connection
from django.db.models.functions import Now
from django.utils.crypto import salted_hmac

from . import job_types, storage
from .models import Installation

log = logging.getLogger(__name__)

BUCKET = "installation"  # holds the marker and the workers' probe objects
SECRETS = {"DJANGO_SECRET_KEY"}  # recorded as keyed digests, and named without their values


def visibility_timeout():
    return settings.CELERY_BROKER_TRANSPORT_OPTIONS.get("visibility_timeout", 3600)


def visibility_problem():
    """What is wrong with CELERY_VISIBILITY_TIMEOUT, or "": Redis hands an unacknowledged task to another worker
    after it, so every job must end before."""
    longest = job_types.max_hard_time_limit()
    if visibility_timeout() <= longest:
        return (f"CELERY_VISIBILITY_TIMEOUT ({visibility_timeout()} s) must exceed the longest job time limit "
                f"({longest} s), or a running job is handed to a second worker.")
    return ""


def fingerprinted():
    """The other settings hosts must share, by environment variable: the secret key signs file URLs and sessions;
    the profile sizes jobs; the time limits and WORKER_LOST_AFTER decide when a job or a worker is given up."""
    return {
        "DJANGO_SECRET_KEY": salted_hmac("ourvidz.installation", "secret key", algorithm="sha256").hexdigest(),
        "OURVIDZ_PROFILE": settings.OURVIDZ_PROFILE,
        "JOB_TIME_LIMIT_FACTOR": settings.JOB_TIME_LIMIT_FACTOR,
        "JOB_TIME_LIMIT_FLOOR": settings.JOB_TIME_LIMIT_FLOOR,
        "WORKER_LOST_AFTER": settings.WORKER_LOST_AFTER,
    }


def settings_here():
    """This process's settings that every host must share, by environment variable (as Installation.settings())."""
    minio = settings.STORAGE_BACKEND == "minio"
    return {
        "STORAGE_BACKEND": settings.STORAGE_BACKEND,
        "MINIO_ENDPOINT": settings.MINIO_ENDPOINT if minio else "",
        "MINIO_BUCKET_PREFIX": settings.MINIO_BUCKET_PREFIX if minio else "",
        "CELERY_VISIBILITY_TIMEOUT": visibility_timeout(),
        **fingerprinted(),
    }


def differences(record, here):
    """The variables whose value `here` differs from `record`'s, each in a sentence that names it."""
    recorded = record.settings()
    names = [name for name, value in here.items() if recorded.get(name) != value]
    if "STORAGE_BACKEND" in names:  # the MinIO settings of another backend say nothing more
        names = [name for name in names if not name.startswith("MINIO_")]
    source = f"for this installation (recorded by {record.recorded_by})"
    return [f"{name} differs from the one {source}" if name in SECRETS
            else f"{name} is {here[name]!r} here but {recorded.get(name)!r} {source}" for name in names]


def where():
    """This process's storage in words, for messages."""
    if settings.STORAGE_BACKEND == "minio":
        return f"MinIO at {settings.MINIO_ENDPOINT}, bucket prefix {settings.MINIO_BUCKET_PREFIX!r}"
    return f"the local folder {settings.MEDIA_ROOT}"


def _write(backend, here, by, replace=True):
    """Record `here` as the installation's settings, with a new marker put in `backend` first (a reader of the row
    always finds its marker). With `replace` false, a record another process wrote meanwhile is kept."""
    marker = uuid.uuid4().hex
    backend.put(BUCKET, marker, marker.encode())
    others = {name: value for name, value in here.items() if name in fingerprinted()}
    fields = {
        "storage_backend": here["STORAGE_BACKEND"], "storage_endpoint": here["MINIO_ENDPOINT"],
        "bucket_prefix": here["MINIO_BUCKET_PREFIX"], "visibility_timeout": here["CELERY_VISIBILITY_TIMEOUT"],
        "fingerprint": hashlib.sha256(json.dumps(others, sort_keys=True).encode()).hexdigest(),
        "fingerprinted": others, "marker": marker, "recorded_by": by,
    }
    if replace:
        Installation.objects.update_or_create(pk=Installation.ID, defaults={**fields, "recorded_at": Now()})
    else:
        _, created = Installation.objects.get_or_create(pk=Installation.ID, defaults=fields)
        if not created:
            backend.delete(BUCKET, marker)
    return Installation.objects.get(pk=Installation.ID)


def record(by):
    """Record this process's settings as the installation's (the web tier's), unless the record holds them already
    and this process's storage holds its marker. `by` names the process (e.g. "web@host"). Returns the record."""
    here = settings_here()
    backend = storage.new_storage()
    current = Installation.objects.filter(pk=Installation.ID).first()
    if current is not None and not differences(current, here) and backend.exists(BUCKET, current.marker):
        return current
    if current is not None:
        changes = differences(current, here) or [f"its marker is not in {where()}"]
        log.warning("%s records this installation's settings anew: %s", by, "; ".join(changes))
    return _write(backend, here, by)


def record_quietly(by):
    """record(), logging rather than raising when the database or storage is out of reach (a web process starts
    all the same, and /healthz says what is down)."""
    try:
        record(by)
    except Exception:
        log.warning("could not record this installation's settings", exc_info=True)


def probe(backend, current):
    """Prove that `backend` (this process's storage) is the installation's: put, read and delete a small object, and
    find the marker the recording process put there. ImproperlyConfigured otherwise."""
    name = f"probe-{uuid.uuid4().hex}"
    try:
        backend.put(BUCKET, name, name.encode())
        read = backend.get(BUCKET, name)
        backend.delete(BUCKET, name)
        marked = backend.exists(BUCKET, current.marker)
    except Exception as exc:
        raise ImproperlyConfigured(f"storage ({where()}) cannot be written and read: {exc}") from exc
    if read != name.encode():
        raise ImproperlyConfigured(f"storage ({where()}) gave back other bytes than were put")
    if not marked:
        raise ImproperlyConfigured(
            f"storage ({where()}) is not this installation's: it lacks the marker {BUCKET}/{current.marker} that "
            f"{current.recorded_by} put in its storage, so files stored here could not be fetched. Give this host "
            "the web tier's storage settings (STORAGE_BACKEND, MINIO_*; for local storage, a MEDIA_ROOT they share).")


def _read_waiting_for_the_database():
    """The installation's record (None if there is none yet). While the database cannot be reached, wait for it
    with growing pauses, however long: a worker exiting instead would be given up by its supervisor after a few
    quick restarts, and no worker can work without the database anyway."""
    delay = 0.5
    while True:
        try:
            return Installation.objects.filter(pk=Installation.ID).first()
        except (OperationalError, InterfaceError) as exc:
            log.warning("the database is unavailable (%s); checking the installation again in %.1f s", exc, delay)
            connection.close()
            time.sleep(delay)
            delay = min(delay * 2, 30.0)


def check_worker(name):
    """Let worker `name` start only if it shares the installation's settings and storage; ImproperlyConfigured,
    naming the variable, otherwise. One query and four small storage calls. With no record yet, this worker's
    settings become the installation's."""
    if problem := visibility_problem():
        raise ImproperlyConfigured(problem)
    here = settings_here()
    backend = storage.new_storage()
    try:
        current = _read_waiting_for_the_database()
        if current is None:
            current = _write(backend, here, name, replace=False)
            log.info("no installation record yet: %s recorded its own settings (%s)", name, where())
    except DatabaseError as exc:
        raise ImproperlyConfigured(f"the installation's record cannot be read ({exc}); has the web host run "
                                   "`manage.py setup`?") from exc
    if problems := differences(current, here):
        raise ImproperlyConfigured("; ".join(problems) + ". Every host must share them: set them as the web tier "
                                   "has them (or, if the installation's settings changed, run `manage.py setup` "
                                   "on the web host first).")
    probe(backend, current)
