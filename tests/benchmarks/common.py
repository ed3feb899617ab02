"""What the benchmark scripts share: the scratch database, the Procfile stack over HTTP, Django set-up, the GPU
part's scaffolding.

The scripts run as `python tests/benchmarks/bench_x.py`, so this folder is on sys.path and they `import common`.
"""

import http.client
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parents[2]


NO_LIMITS = {"OURVIDZ_SIGNUP_CREDITS": "100000000", "QUOTA_ACTIVE_JOBS": "0", "QUOTA_SUBMISSIONS_PER_MINUTE": "0"}


def scratch_env(bench_db, redis_db=15):
    """Environment of a benchmark run: database `bench_db` and Redis db `redis_db` on the configured servers,
    quiet logs."""
    db = urlsplit(os.environ["DATABASE_URL"])
    redis = urlsplit(os.environ["REDIS_URL"])
    return {
        "DATABASE_URL": urlunsplit(db._replace(path="/" + bench_db)),
        "REDIS_URL": urlunsplit(redis._replace(path=f"/{redis_db}")),  # what the worker publishes on loading
        "DJANGO_SECRET_KEY": "bench-secret-key-not-for-production-use-0123456789",
        "LOG_LEVEL": "WARNING",
        # Floods are what the benchmarks measure: credits on, but neither they nor the quotas refuse one.
        **NO_LIMITS,
    }


def recreate_database(bench_db):
    """Drop database `bench_db` (if any) on the DATABASE_URL server and create it empty."""
    import psycopg2

    admin = urlsplit(os.environ["DATABASE_URL"])
    conn = psycopg2.connect(urlunsplit(admin._replace(path="/postgres")))
    conn.autocommit = True
    with conn.cursor() as cursor:
        cursor.execute(f'DROP DATABASE IF EXISTS "{bench_db}" WITH (FORCE)')
        cursor.execute(f'CREATE DATABASE "{bench_db}"')
    conn.close()


# --- The Procfile stack, driven over HTTP (bench_core, bench_scheduler) -------------------------------

HOST = "127.0.0.1"


def stack_env(bench_db, data_dir, port, redis_db=15):
    """Environment of the Procfile's processes: the scratch database and Redis db, `data_dir`, the dev models,
    gunicorn on HOST:`port`, this venv's commands first on PATH."""
    env = dict(os.environ)
    env.update({
        **scratch_env(bench_db, redis_db),
        "OURVIDZ_DATA_DIR": str(data_dir),
        "OURVIDZ_MODELS_DIR": str(ROOT / "var" / "models"),
        "WEB_BIND": f"{HOST}:{port}",
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
    })
    return env


def manage(env, *args):
    return subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=env, check=True,
                          capture_output=True, text=True).stdout


def reset_stack(env, bench_db, users):
    """Fresh scratch database and Redis db, the dev models, and a user with an API token per name in `users`;
    returns their tokens."""
    import redis

    recreate_database(bench_db)
    redis.Redis.from_url(env["REDIS_URL"]).flushdb()
    manage(env, "setup")
    return manage(env, "shell", "-c", (
        "from django.contrib.auth.models import User; from rest_framework.authtoken.models import Token; "
        f"print(*[Token.objects.create(user=User.objects.create_user(name)).key for name in {list(users)!r}])"
    )).split()[-len(users):]


class Procs:
    """Processes of the Procfile, started by the supervisor as `make run` starts them; stop() ends them all."""

    def __init__(self, names, env, log):
        self.process = subprocess.Popen([sys.executable, "-m", "ourvidz.supervise", *names], cwd=ROOT,
                                        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def stop(self):
        os.killpg(self.process.pid, signal.SIGINT)
        self.process.wait(60)

    def cpu_seconds(self):
        """CPU seconds (user and system) the processes still running have used: a cost that does not vary with
        how busy the rest of the machine is, as throughput does."""
        import psutil

        supervisor = psutil.Process(self.process.pid)
        total = 0.0
        for proc in [supervisor, *supervisor.children(recursive=True)]:
            try:
                times = proc.cpu_times()
            except psutil.NoSuchProcess:
                continue
            total += times.user + times.system
        return total


def request(conn, method, path, token, body=None):
    headers = {"Authorization": f"Token {token}", "Content-Type": "application/json"}
    conn.request(method, path, body=json.dumps(body) if body is not None else None, headers=headers)
    response = conn.getresponse()
    return response.status, json.loads(response.read() or b"null")


def wait_http(port, token, timeout=60):
    """A connection to the web server on HOST:`port`, once it answers."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            conn = http.client.HTTPConnection(HOST, port, timeout=5)
            if request(conn, "GET", "/api/queues/", token)[0] == 200:
                return conn
        except OSError:
            time.sleep(0.2)
    raise TimeoutError("web server did not answer")


def wait_workers(conn, token, queues=None, timeout=120):
    """Wait until each pool queue in `queues` (default: all) has workers online, all with their models loaded
    (a job released earlier would wait for the loading, and count it)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        stats = request(conn, "GET", "/api/queues/", token)[1]
        if all(0 < q["workers_ready"] == q["workers_online"]
               for q in stats if queues is None or q["queue"] in queues):
            return
        time.sleep(0.5)
    raise TimeoutError("workers did not come online")


def django_setup():
    """django.setup(), with diffusers' progress bars off."""
    import diffusers
    import django

    django.setup()
    diffusers.utils.logging.disable_progress_bar()


def setup_django(bench_db, data_dir, **env):
    """Point this process (and the children it starts) at the scratch database and `data_dir`, then set up Django."""
    os.environ.update({
        **scratch_env(bench_db),
        "OURVIDZ_DATA_DIR": str(data_dir), "OURVIDZ_PROFILE": "dev", "STORAGE_BACKEND": "local",
        "TORCH_DEVICE": "cpu", "DJANGO_SETTINGS_MODULE": "ourvidz.settings", "TRANSFORMERS_VERBOSITY": "error",
        **env,
    })
    django_setup()


def reset_database(bench_db):
    """Recreate the scratch database this Django process uses, and migrate it."""
    from django.core.management import call_command

    recreate_database(bench_db)
    call_command("migrate", interactive=False, verbosity=0)


def bench_user():
    """The `bench` user, created on first use."""
    from django.contrib.auth import get_user_model

    return get_user_model().objects.get_or_create(username="bench")[0]


def run_saved_job(job, queue, generate):
    """Run a saved job as the `queue` worker does; return it reloaded (it must have completed) and its wall time."""
    from generation.models import Job, JobStatus
    from generation.worker import runtime

    start = time.perf_counter()
    runtime.run(job.pk, queue, generate)
    wall = time.perf_counter() - start
    job = Job.objects.get(pk=job.pk)
    assert job.status == JobStatus.COMPLETED, job.error_message
    return job, wall


def print_versions(name):
    """The header's first line: the GPU, CPU threads, torch / diffusers / transformers versions."""
    import diffusers
    import torch
    import transformers

    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "no CUDA device"
    print(f"{name} benchmark — GPU: {device}; CPU threads: {torch.get_num_threads()}; torch {torch.__version__}, "
          f"diffusers {diffusers.__version__}, transformers {transformers.__version__}")


def add_part_options(parser):
    """The --cpu-only, --gpu and --gpu-dry-run options that run_parts reads."""
    parser.add_argument("--cpu-only", action="store_true", help="skip the GPU part")
    parser.add_argument("--gpu", action="store_true", help="only the GPU part; fails without CUDA")
    parser.add_argument("--gpu-dry-run", action="store_true", help="only the GPU code path, scaled down, on a CPU")


def run_parts(args, cpu_part, gpu_part):
    """Run the CPU part and/or the GPU part, as --cpu-only, --gpu, --gpu-dry-run and CUDA's presence select."""
    import torch

    if args.gpu and not torch.cuda.is_available():
        sys.exit("--gpu: no CUDA device in this process")
    if not (args.gpu or args.gpu_dry_run):
        cpu_part(args)
    if args.gpu or args.gpu_dry_run or (torch.cuda.is_available() and not args.cpu_only):
        gpu_part(args)
    elif not args.cpu_only:
        print("\n2. GPU part skipped: no CUDA device (--gpu-dry-run runs its code path on a CPU).")


def gpu_device(dry, dtype):
    """(device, dtype, cuda, sync) of the GPU part: CUDA in `dtype`, or the CPU in float32 for a dry run."""
    import torch

    device = torch.device("cpu" if dry else "cuda")
    cuda = device.type == "cuda"

    def sync():
        if cuda:
            torch.cuda.synchronize()

    return device, torch.float32 if dry else dtype, cuda, sync


def gpu_settings(dry, no_compile, compile_setting):
    """override_settings of the GPU part: the profile warm_up renders at, `compile_setting` "0" with --no-compile."""
    from django.test import override_settings

    overrides = {"OURVIDZ_PROFILE": "dev" if dry else "production"}
    if no_compile:
        overrides[compile_setting] = "0"
    return override_settings(**overrides)


def reset_peak_vram(cuda):
    """Start a peak-VRAM measurement (nothing without CUDA)."""
    import torch

    if cuda:
        torch.cuda.reset_peak_memory_stats()


def peak_vram(cuda):
    """Peak VRAM since reset_peak_vram, 9 characters wide for the tables ("–" without CUDA)."""
    import torch

    return f"{torch.cuda.max_memory_allocated() / 2**30:6.1f} GiB" if cuda else "        –"


def wait_ended(db, total, stall_seconds=120, pause=0.5):
    """Wait until the database holds `total` jobs that ended; TimeoutError when none ends for `stall_seconds`."""
    finished, last, since = -1, -1, time.monotonic()
    while finished < total:
        with db.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM generation_job WHERE status IN ('completed', 'failed', 'cancelled')")
            finished = cursor.fetchone()[0]
        if finished != last:
            last, since = finished, time.monotonic()
        elif time.monotonic() - since > stall_seconds:
            raise TimeoutError(f"{finished} of {total} jobs ended; none for {stall_seconds} s")
        time.sleep(pause)
