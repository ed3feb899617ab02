"""What both worker pools do around their diffusers pipelines: the device, loading once per process,
GPU set-up and warm-up, the step callback, the reference picture, checks and load reports.

Worker processes only (the web tier never imports generation.worker).
"""

import gc
import io
import logging
import os
import signal
from pathlib import Path

import diffusers
import numpy as np
import torch
from celery import signals
from diffusers.callbacks import PipelineCallback
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from PIL import Image, ImageOps

from .. import job_types, storage
from ..models import ReferenceImage
from . import heartbeats
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

# What this process loaded: name -> (key, object). A worker loads each model once and keeps it.
_loaded = {}


def load_once(name, key, load):
    """`load()`'s result, loaded once per process and kept while `key` (the settings and objects it
    was loaded from) stays the same; another key drops the old one first, then loads anew."""
    entry = _loaded.get(name)
    if entry is None or entry[0] != key:
        _loaded.pop(name, None)  # never two copies of a model in memory
        _loaded[name] = (key, load())
    return _loaded[name][1]


def forget_loaded():
    """Drop everything this process loaded (tests; a worker keeps its models for its whole life)."""
    _loaded.clear()


def torch_device():
    """settings.TORCH_DEVICE as a torch.device; "auto" means CUDA when this process sees a GPU."""
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


def compile_on_gpu(pipe, device, module, setting, mode, channels_last=False):
    """GPU speed-ups: `pipe.<module>` compiled when `setting` ("auto", "1", "true") allows, and, with
    `channels_last`, that memory format for it and the VAE. Either turns on TF32 matrix products (WAN
    without compiling keeps full float32 precision in its VAE). True if compiled."""
    if device.type != "cuda":
        return False
    compiling = setting in ("auto", "1", "true")
    if compiling or channels_last:
        torch.backends.cuda.matmul.allow_tf32 = True
    if channels_last:
        for part in (getattr(pipe, module), pipe.vae):
            part.to(memory_format=torch.channels_last)
    if compiling:
        setattr(pipe, module, torch.compile(getattr(pipe, module), mode=mode, fullgraph=True))
    return compiling


def warm_up(pipe, job_type, all_sizes=False, variants=None):
    """Short renders, so that the first user job pays no one-off costs: kernels at `job_type`'s default
    size or, for a compiled model, a graph for every aspect ratio. `variants(params)` lists the further
    pipeline arguments of each render at one size (batch sizes, frames, a first frame)."""
    jt = job_types.get(job_type)
    for ratio in job_types.aspect_ratios(jt) if all_sizes else [None]:
        params = job_types.render_params(jt, ratio)
        for extra in variants(params) if variants else [{}]:
            pipe(prompt="warm-up", num_inference_steps=2, width=params["width"], height=params["height"],
                 output_type="latent", **extra)


class StepReport(PipelineCallback):
    """A diffusers step callback reporting each step to the job's run (which raises JobCancelled) and, with a
    `previewer` (generation.worker.previews), sending previews of the latents. A job rendered in several
    pipeline calls reports call `calls_done` of `calls_total`."""

    tensor_inputs = []

    def __init__(self, run, calls_done=0, calls_total=1, previewer=None):
        super().__init__()
        self.run, self.calls_done, self.calls_total = run, calls_done, calls_total
        self.previewer = previewer
        if previewer is not None:
            self.tensor_inputs = ["latents"]

    def callback_fn(self, pipe, step_index, timestep, callback_kwargs):
        steps = pipe.num_timesteps
        self.run.step(self.calls_done * steps + step_index + 1, self.calls_total * steps)
        if self.previewer is not None:
            self.run.preview(callback_kwargs["latents"], self.previewer)
        return callback_kwargs


def reference_picture(job):
    """The job's reference image, read from storage (never from a URL), resized and center-cropped
    to the job's size (never stretched). JobError if it was deleted before the job ran."""
    if job.reference_image is None:
        raise JobError("The reference image was deleted before the job ran.", refund=False)
    data = storage.get_storage().get(ReferenceImage.BUCKET, job.reference_image.path)
    picture = Image.open(io.BytesIO(data)).convert("RGB")
    return ImageOps.fit(picture, (job.width, job.height), Image.Resampling.LANCZOS)


def free_memory():
    """Give cached GPU memory back after a cancelled or out-of-memory render."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def check_finite(pixels):
    """Refuse NaN or infinite output rather than store a black picture."""
    if not np.isfinite(pixels).all():
        raise JobError("The model produced invalid pixels (NaN); nothing was stored.")


def report_loaded(pool, path, device, dtype, seconds, **extra):
    """Log and publish what this worker loaded, for the queues endpoint and operators."""
    cuda = device.type == "cuda"
    info = {
        "pool": pool, "model": model_name(path), "model_path": str(path), "device": str(device),
        "dtype": dtype_name(dtype), "load_seconds": round(seconds, 2),
        "vram_bytes": torch.cuda.memory_allocated(device) if cuda else None,
        "vram_total_bytes": torch.cuda.get_device_properties(device).total_memory if cuda else None,
        **heartbeats.gpu_memory(device),
        **extra,
    }
    log.info("%s pipeline loaded from %s on %s (%s) in %.1f s", pool, path, device, info["dtype"], seconds)
    try:
        heartbeats.publish_loaded(info)
    except Exception:  # the report is informative; a Redis hiccup must not stop the worker
        log.warning("could not publish the loaded %s model", pool, exc_info=True)
    heartbeats.keep_gpu_memory_fresh(info, device)
    return info


def load_at_start(pool, *loaders):
    """Run `loaders` when a worker's pool process starts, so the first job does not pay for loading.

    On failure the worker stops (rather than failing every job, or restarting the pool process in a
    loop): Celery ignores exceptions here, so the pool process asks its parent for a cold shutdown.
    Returns the handler (tests call it directly).
    """
    def load(**kwargs):
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
    signals.worker_init.connect(_fail_on_cold_shutdown, weak=False)
    return load


def _fail_on_cold_shutdown(sender, **kwargs):
    """Make a cold shutdown end the worker with status 1, as Celery intends (its WorkController.start drops
    the code on the way out): a supervisor, systemd or compose must see that a worker stopped itself."""
    worker = sender

    def record(how, exitcode, **kwargs):
        if how == "Cold" and exitcode:
            worker.exitcode = exitcode

    signals.worker_shutting_down.connect(record, weak=False)


def check_at_start(pool, check):
    """Run `check` in the worker's main process before it starts; an ImproperlyConfigured (a
    ModelConfigError) stops the worker with its message (exit status 1)."""
    def run_check(**kwargs):
        try:
            check()
        except ImproperlyConfigured as exc:
            raise SystemExit(f"{pool} worker not started: {exc}") from exc

    signals.worker_init.connect(run_check, weak=False)
    return run_check
