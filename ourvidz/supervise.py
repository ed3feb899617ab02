"""Run the Procfile's processes and keep them running: what `make run` uses (in place of honcho).

    python -m ourvidz.supervise [-f PROCFILE] [NAME ...]

Every process of the Procfile, or only those named, each line run as `sh -c 'exec LINE'` (so the process
is the program itself), its output printed with its name in front, as honcho prints it.

- A process that exits is started again, after 1 s (2 s after a second exit at once); one that exits
  within START_SECONDS of starting GIVE_UP_AFTER times in a row is given up, with a message: it would only
  die again. When nothing is
  left to run the supervisor exits with status 1.
- Ctrl-C or SIGTERM stops everything gracefully: each process's main process, and only it, gets SIGTERM
  and up to STOP_GRACE_SECONDS to exit (a Celery worker finishes its running job first: warm shutdown; its
  pool children hear from it, never from us), then whatever is left of each process is killed. A second
  Ctrl-C (or SIGTERM) kills at once.
- Every process dies with the supervisor, even when it is killed with SIGKILL (Linux's parent-death
  signal), so nothing survives it to hold a port against the next `make run`.
"""

import argparse
import ctypes
import os
import re
import selectors
import signal
import subprocess
import sys
import time
from pathlib import Path

STOP_GRACE_SECONDS = 300  # the default: long enough for a job to finish (deploy/ uses it too)
START_SECONDS = 30  # a process that exits sooner than this after starting "died at once"
GIVE_UP_AFTER = 3  # ... so many times in a row: given up
RESTART_DELAY = 1  # seconds before a restart, doubled after each exit at once
PROCFILE = Path(__file__).resolve().parent.parent / "Procfile"
SYSTEM = "supervise"  # the name in front of the supervisor's own messages

_prctl = getattr(ctypes.CDLL(None, use_errno=True), "prctl", None)  # None outside Linux
PR_SET_PDEATHSIG = 1


def die_with_parent(signum):
    """A `preexec_fn` for subprocess.Popen: the child gets `signum` from the kernel when its parent dies.

    Safe only in a single-threaded parent (as any preexec_fn); does nothing where prctl is missing.
    """
    parent = os.getpid()

    def preexec():
        if _prctl is not None:
            _prctl(PR_SET_PDEATHSIG, signum)
            if os.getppid() != parent:  # the parent died before prctl: no signal would ever come
                os._exit(1)
    return preexec


def read_procfile(path):
    """The Procfile's {name: command line}, in its order."""
    processes = {}
    for line in Path(path).read_text().splitlines():
        match = re.match(r"^([A-Za-z0-9_-]+):\s*(.+)$", line)
        if match:
            processes[match[1]] = match[2]
    return processes


def describe(returncode):
    """How a process ended, in words, from its Popen.returncode."""
    return f"killed by {signal.Signals(-returncode).name}" if returncode < 0 else f"status {returncode}"


class Process:
    """One Procfile process: its command and the current run of it."""

    def __init__(self, name, command):
        self.name = name
        self.command = command
        self.popen = None
        self.started = 0.0
        self.exits_at_once = 0
        self.restart_at = None
        self.group = None  # the process group of the latest run (its pid), to kill what is left of it

    def kill_group(self):
        """SIGKILL to whatever is left of the latest run (e.g. children of a main process that died)."""
        if self.group is not None:
            try:
                os.killpg(self.group, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass


class Supervisor:
    """Starts the Processes, starts them again when they die, and stops them on SIGINT or SIGTERM."""

    def __init__(self, processes, grace, env, out=sys.stdout):
        self.processes = processes
        self.grace = grace
        self.env = env
        self.out = out
        self.width = max(len(SYSTEM), *(len(p.name) for p in processes))
        self.selector = selectors.DefaultSelector()
        self.signals = []

    def say(self, name, text):
        stamp = time.strftime("%H:%M:%S")
        for line in text.splitlines() or [""]:
            self.out.write(f"{stamp} {name:<{self.width}} | {line}\n")
        self.out.flush()

    def start(self, process):
        process.popen = subprocess.Popen(
            ["/bin/sh", "-c", "exec " + process.command], env=self.env, stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            # Its own process group: the terminal's Ctrl-C reaches only us, and we decide who hears what.
            process_group=0, preexec_fn=die_with_parent(signal.SIGKILL),
        )
        process.group = process.popen.pid
        process.started = time.monotonic()
        process.restart_at = None
        self.selector.register(process.popen.stdout, selectors.EVENT_READ, [process.name, b""])
        self.say(SYSTEM, f"{process.name} started (pid {process.popen.pid})")

    def print_output(self, timeout):
        """Print the lines the processes wrote, waiting up to `timeout` seconds for some."""
        for key, _ in self.selector.select(timeout):
            name, pending = key.data
            data = os.read(key.fd, 65536)
            if not data:  # end of output: every holder of the pipe has exited
                self.selector.unregister(key.fileobj)
                key.fileobj.close()
                if pending:
                    self.say(name, pending.decode(errors="replace"))
                continue
            *lines, key.data[1] = (pending + data).split(b"\n")
            if lines:
                self.say(name, b"\n".join(lines).decode(errors="replace"))

    def reap(self, stopping):
        """Note the processes that exited; schedule restarts unless `stopping`."""
        now = time.monotonic()
        for process in self.processes:
            if process.popen is None or process.popen.poll() is None:
                continue
            returncode, ran = process.popen.returncode, now - process.started
            process.popen = None
            process.kill_group()  # what it left behind would only be in the way of its next run
            process.group = None
            if stopping:
                self.say(SYSTEM, f"{process.name} stopped ({describe(returncode)})")
                continue
            process.exits_at_once = process.exits_at_once + 1 if ran < START_SECONDS else 0
            if process.exits_at_once >= GIVE_UP_AFTER:
                self.say(SYSTEM, f"{process.name} exited ({describe(returncode)}) within {START_SECONDS} s of "
                                 f"starting {GIVE_UP_AFTER} times in a row: given up")
                continue
            delay = RESTART_DELAY * 2 ** max(process.exits_at_once - 1, 0)
            process.restart_at = now + delay
            self.say(SYSTEM, f"{process.name} exited ({describe(returncode)}) after {ran:.1f} s; "
                             f"starting it again in {delay} s")

    def running(self):
        return [p for p in self.processes if p.popen is not None]

    def run(self):
        """Start the processes, keep them running until a signal asks us to stop; the exit status."""
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, lambda signum, frame: self.signals.append(signum))
        for process in self.processes:
            self.start(process)
        while not self.signals:
            self.print_output(0.2)
            self.reap(stopping=False)
            for process in self.processes:
                if process.restart_at is not None and time.monotonic() >= process.restart_at:
                    self.start(process)
            if not self.running() and all(p.restart_at is None for p in self.processes):
                self.say(SYSTEM, "nothing left to run")
                return 1
        return self.stop()

    def stop(self):
        """SIGTERM to each main process, up to the grace period for them to exit, then SIGKILL to what is left."""
        signame = signal.Signals(self.signals[0]).name
        self.say(SYSTEM, f"{signame} received: SIGTERM to each process, waiting up to {self.grace:g} s "
                         "for them to stop (a second Ctrl-C kills them at once)")
        for process in self.running():
            process.popen.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.grace
        handled = len(self.signals)
        while self.running() and time.monotonic() < deadline and len(self.signals) == handled:
            self.print_output(0.2)
            self.reap(stopping=True)
        for process in self.running():
            why = "a second signal" if len(self.signals) > handled else f"still running after {self.grace:g} s"
            self.say(SYSTEM, f"{process.name}: {why}: killing it")
            process.kill_group()
            process.popen.wait()
        self.reap(stopping=True)
        end = time.monotonic() + 1  # the last lines, unless a leftover still holds a pipe
        while self.selector.get_map() and time.monotonic() < end:
            self.print_output(0.1)
        return 0


def grace_seconds():
    """STOP_GRACE_SECONDS from the environment."""
    value = os.environ.get("STOP_GRACE_SECONDS", str(STOP_GRACE_SECONDS))
    try:
        return float(value)
    except ValueError:
        sys.exit(f"STOP_GRACE_SECONDS={value!r}: not a number of seconds")


def main(argv):
    parser = argparse.ArgumentParser(prog="python -m ourvidz.supervise", description=__doc__.split("\n")[0])
    parser.add_argument("-f", "--procfile", default=PROCFILE, help="the Procfile (default: the project's)")
    parser.add_argument("names", nargs="*", help="processes to run (default: all)")
    args = parser.parse_args(argv)
    commands = read_procfile(args.procfile)
    unknown = [name for name in args.names if name not in commands]
    if unknown:
        sys.exit(f"not in {args.procfile}: {', '.join(unknown)} (it has: {', '.join(commands)})")
    env = dict(os.environ)
    env.setdefault("PYTHONUNBUFFERED", "1")  # lines as they are written, not when a buffer fills
    processes = [Process(name, commands[name]) for name in args.names or commands]
    sys.exit(Supervisor(processes, grace_seconds(), env).run())


if __name__ == "__main__":
    main(sys.argv[1:])
