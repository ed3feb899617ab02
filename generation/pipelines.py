"""What both worker pools do around their diffusers pipelines: device, step callback, checks, reports.

Worker processes only; torch is imported inside the functions so the web tier can import
`generation` without it.
"""

import logging
import os
import signal
from pathlib import Path

from celery import signals
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from . import workers
from .runtime import JobError

log = logging.getLogger(__name__)

# Names other tools write in the PNG `parameters` chunk.
SAMPLER_NAMES = {
    "EulerDiscreteScheduler": "Euler",
    "EulerAncestralDiscreteScheduler": "Euler a",
    "DPMSolverMultistepScheduler": "DPM++ 2M",
    "DDIMScheduler": "DDIM",
    "UniPCMultistepScheduler": "UniPC",
    "FlowMatchEulerDiscreteScheduler": "Euler",
}


def torch_device():
    """settings.TORCH_DEVICE as a torch.device; "auto" means CUDA when this process sees a GPU."""
    import torch

    name = settings.TORCH_DEVICE
    if name == "auto":
        # CUDA_VISIBLE_DEVICES pins each worker to its own GPU, so "cuda" is that one.
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


def model_name(path):
    """A model's short name: its folder, or its checkpoint file without the extension."""
    return Path(path).name.removesuffix(".safetensors")


def dtype_name(dtype):
    return str(dtype).removeprefix("torch.")


def sampler_name(pipe):
    name = type(pipe.scheduler).__name__
    return SAMPLER_NAMES.get(name, name)


def step_callback(run, calls_done=0, calls_total=1):
    """A diffusers `callback_on_step_end` reporting each step to the job (it raises JobCancelled).

    A job rendered in several pipeline calls reports call `calls_done` of `calls_total`.
    """
    def on_step_end(pipe, step_index, timestep, callback_kwargs):
        steps = pipe.num_timesteps
        run.step(calls_done * steps + step_index + 1, calls_total * steps)
        return callback_kwargs
    return on_step_end


def free_memory():
    """Give cached GPU memory back after a cancelled or out-of-memory render."""
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def check_finite(pixels):
    """Refuse NaN or infinite output rather than store a black picture."""
    import numpy as np

    if not np.isfinite(pixels).all():
        raise JobError("The model produced invalid pixels (NaN); nothing was stored.")


def report_loaded(pool, path, device, dtype, seconds, **extra):
    """Log and publish what this worker loaded, for the queues endpoint and operators."""
    import torch

    cuda = device.type == "cuda"
    info = {
        "pool": pool, "model": model_name(path), "model_path": str(path), "device": str(device),
        "dtype": dtype_name(dtype), "load_seconds": round(seconds, 2),
        "vram_bytes": torch.cuda.memory_allocated(device) if cuda else None,
        "vram_total_bytes": torch.cuda.get_device_properties(device).total_memory if cuda else None,
        **extra,
    }
    log.info("%s pipeline loaded from %s on %s (%s) in %.1f s", pool, path, device, info["dtype"], seconds)
    try:
        workers.publish_loaded(info)
    except Exception:  # the report is informative; a Redis hiccup must not stop the worker
        log.warning("could not publish the loaded %s model", pool, exc_info=True)
    return info


def load_at_start(pool, *loaders):
    """Run `loaders` when a worker's pool process starts, so the first job does not pay for loading.

    On failure the worker stops (rather than failing every job, or restarting the pool process in a
    loop): Celery ignores exceptions here, so the pool process asks its parent for a cold shutdown.
    Returns the handler (tests call it directly).
    """
    def load(**kwargs):
        import diffusers

        # Load-time progress bars, one per component, would only flood the worker log.
        diffusers.utils.logging.disable_progress_bar()
        try:
            for loader in loaders:
                loader()
        except Exception:
            log.exception("could not load the %s models; stopping the worker", pool)
            if "signal" in kwargs:  # sent by Celery in a pool process, not called directly
                os.kill(os.getppid(), signal.SIGQUIT)
            raise

    signals.worker_process_init.connect(load, weak=False)
    return load


def check_at_start(pool, check):
    """Run `check` in the worker's main process before it starts; a ModelConfigError-style
    ImproperlyConfigured stops the worker with its message (exit status 1)."""
    def run_check(**kwargs):
        try:
            check()
        except ImproperlyConfigured as exc:
            raise SystemExit(f"{pool} worker not started: {exc}") from exc

    signals.worker_init.connect(run_check, weak=False)
    return run_check


def check_folder(path, variable, classes):
    """Raise ImproperlyConfigured unless `path` is a diffusers pipeline folder of one of `classes` with
    every component it lists. Reads JSON only, so a worker's main process can call it before forking."""
    import json

    folder = Path(path) if path else None
    if folder is None or not folder.is_dir():
        raise ImproperlyConfigured(f"{variable}={path}: no such folder.")
    try:
        index = json.loads((folder / "model_index.json").read_text())
    except (OSError, ValueError) as exc:
        raise ImproperlyConfigured(f"{variable}={folder}: not a diffusers pipeline folder ({exc}).") from exc
    if index.get("_class_name") not in classes:
        raise ImproperlyConfigured(f"{variable}={folder}: model_index.json describes {index.get('_class_name')!r}, "
                                   f"not {' or '.join(sorted(classes))}.")
    missing = [name for name, value in index.items()
               if not name.startswith("_") and isinstance(value, list) and value[0] and not (folder / name).is_dir()]
    if missing:
        raise ImproperlyConfigured(f"{variable}={folder}: missing {', '.join(missing)}/.")
