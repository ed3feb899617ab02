"""Start one more worker of a pool on this host: what `make worker POOL=sdxl GPU=1` and deploy/'s worker units run.

    python -m ourvidz.worker sdxl --gpu 1          # the worker sdxl-gpu1@<host>, on GPU 1 only
    python -m ourvidz.worker sdxl-gpu1             # the same, read from its name (systemd's ourvidz-worker@sdxl-gpu1)
    python -m ourvidz.worker wan --name wan-b      # wan-b@<host>, on the GPUs it sees (a container's own)

First `manage.py setup --pool POOL`: that pool's models checked (or the tiny development ones built), the database
found migrated; never a migration. Then the Procfile's line for the pool, with the node name in SDXL_WORKER_NAME
(WAN_WORKER_NAME) and the GPU in SDXL_CUDA_VISIBLE_DEVICES (WAN_…): run in place of this process (systemd and compose
restart it), or with --supervise under ourvidz.supervise, which starts it again when it dies (`make worker`).
"""

import argparse
import os
import re
import subprocess
import sys

from ourvidz.supervise import PROCFILE, read_procfile

POOLS = ("sdxl", "wan")
WORKER = re.compile(rf"({'|'.join(POOLS)})(?:-gpu(\d+))?")
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


def plan(worker, gpu=None, name=None):
    """(pool, node name without its host, GPU or None) of `worker` ("sdxl" or "sdxl-gpu1") with --gpu and --name;
    ValueError saying what is wrong."""
    match = WORKER.fullmatch(worker)
    if not match:
        raise ValueError(f"{worker!r}: not a pool ({', '.join(POOLS)}) nor <pool>-gpu<n>")
    pool, named_gpu = match[1], match[2]
    if gpu is not None and named_gpu is not None and str(gpu) != named_gpu:
        raise ValueError(f"{worker} names GPU {named_gpu}, --gpu says {gpu}")
    gpu = str(gpu) if gpu is not None else named_gpu
    name = name or (f"{pool}-gpu{gpu}" if gpu is not None else pool)
    if not NAME.fullmatch(name):
        raise ValueError(f"--name {name!r}: letters, digits, '-', '_' and '.' only (the host part is added)")
    return pool, name, gpu


def environment(pool, name, gpu, env):
    """`env` with the pool's node name and GPU set, as the Procfile's line reads them."""
    env = {**env, f"{pool.upper()}_WORKER_NAME": name}
    if gpu is not None:
        env[f"{pool.upper()}_CUDA_VISIBLE_DEVICES"] = gpu
    return env


def main(argv):
    parser = argparse.ArgumentParser(prog="python -m ourvidz.worker", description=__doc__.split("\n")[0])
    parser.add_argument("worker", help="the pool (sdxl, wan), or <pool>-gpu<n>")
    parser.add_argument("--gpu", type=int, help="the one GPU it uses (CUDA_VISIBLE_DEVICES); its name gets -gpu<n>")
    parser.add_argument("--name", help="its node name before the @<host> (default: the pool, or <pool>-gpu<n>)")
    parser.add_argument("--supervise", action="store_true", help="start it again when it dies (make worker)")
    parser.add_argument("--no-setup", action="store_true", help="skip `manage.py setup --pool`")
    args = parser.parse_args(argv)
    try:
        pool, name, gpu = plan(args.worker, args.gpu, args.name)
    except ValueError as exc:
        parser.error(str(exc))
    env = environment(pool, name, gpu, os.environ)
    root = PROCFILE.parent
    if not args.no_setup:
        prepared = subprocess.run([sys.executable, "manage.py", "setup", "--pool", pool], cwd=root, env=env)
        if prepared.returncode:
            sys.exit(prepared.returncode)
    if args.supervise:
        command = [sys.executable, "-m", "ourvidz.supervise", pool]
    else:
        command = ["/bin/sh", "-c", "exec " + read_procfile(PROCFILE)[pool]]
    os.chdir(root)
    os.execvpe(command[0], command, env)


if __name__ == "__main__":
    main(sys.argv[1:])
