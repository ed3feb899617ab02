"""The WAN 2.1 text-to-video pipeline: loaded once per worker process, and the pool's `generate`."""

import logging
import time
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from celery.exceptions import SoftTimeLimitExceeded
from diffusers import WanPipeline
from django.conf import settings
from PIL import Image

from generation import images, job_types, pipelines, runtime

from . import enhancer, video

log = logging.getLogger(__name__)


def get_pipeline():
    """The WanPipeline for the configured path and device, loaded on first use in this process."""
    return _load(settings.WAN_MODEL_PATH, pipelines.torch_device())


@lru_cache(maxsize=1)  # keyed by path and device, so a changed setting loads the new model
def _load(path, device):
    if not Path(path).is_dir():
        # diffusers would read a missing folder as a hub repo id and say so, confusingly.
        raise FileNotFoundError(f"no WAN model at {path} (WAN_MODEL_PATH)")
    if device.type == "cuda":
        # WAN's VAE loses quality in bf16; diffusers' own WAN examples keep it in float32.
        dtype = {"default": torch.bfloat16, "vae": torch.float32}
    else:
        dtype = torch.float32
    start = time.perf_counter()
    pipe = WanPipeline.from_pretrained(path, local_files_only=True, dtype=dtype).to(device)
    pipe.set_progress_bar_config(disable=True)
    pipelines.report_loaded("wan", path, device, pipe.transformer.dtype, time.perf_counter() - start,
                            vae_dtype=pipelines.dtype_name(pipe.vae.dtype), enhancer=enhancer.model_name())
    return pipe


def generate(run):
    """Render `run.job` (enhancing its prompt first for enhanced types) into one PNG or MP4 Output."""
    job = run.job
    with run.timed("load"):
        pipe = get_pipeline()
    prompt = enhance_prompt(run, job.prompt) if job.type.enhanced else job.prompt
    run.metadata.update(model=pipelines.model_name(settings.WAN_MODEL_PATH),
                        sampler=pipelines.sampler_name(pipe), device=str(pipe.device),
                        dtype=pipelines.dtype_name(pipe.transformer.dtype))

    with run.timed("denoise"):  # the whole call: text encoding, denoising and VAE decoding
        try:
            frames = pipe(
                prompt=prompt, negative_prompt=job.negative_prompt or None, height=job.height,
                width=job.width, num_frames=job.frames if job.type.kind == "video" else 1,
                num_inference_steps=job.steps, guidance_scale=job.guidance,
                # A CPU generator gives the same starting noise on every device.
                generator=torch.Generator(device="cpu").manual_seed(job.seed),
                output_type="np", callback_on_step_end=pipelines.step_callback(run),
            ).frames[0]  # float array (frames, h, w, 3) in 0..1
        except torch.cuda.OutOfMemoryError as exc:
            torch.cuda.empty_cache()
            raise runtime.JobError(f"The GPU ran out of memory rendering {job.width}×{job.height} "
                                   f"with {job.frames} frames.") from exc
    pipelines.check_finite(frames)
    frames = (frames * 255).round().clip(0, 255).astype(np.uint8)

    with run.timed("encode"):
        if job.type.kind == "video":
            return [encode_video(job, frames)]
        return [encode_image(job, frames[0], prompt, run.metadata)]


def enhance_prompt(run, prompt):
    """The enhancer's rewrite of `prompt`, or `prompt` itself when enhancement fails."""
    enhanced = error = None
    with run.timed("enhance"):
        try:
            enhanced = enhancer.enhance(prompt)
        except SoftTimeLimitExceeded:
            raise  # out of time: the job must stop, not go on to render
        except Exception as exc:
            # A failed rewrite costs detail, not the job: render the user's own prompt.
            log.warning("prompt enhancement failed for job %s; using the original prompt", run.job.pk,
                        exc_info=True)
            error = f"{type(exc).__name__}: {exc}"
    if enhanced:
        run.fields["enhanced_prompt"] = enhanced
    run.metadata["enhancement"] = {"original": prompt, "enhanced": enhanced, "error": error,
                                   "model": enhancer.model_name()}
    return enhanced or prompt


def encode_image(job, pixels, prompt, metadata):
    """One picture as a PNG runtime.Output carrying its generation parameters."""
    picture = Image.fromarray(pixels)
    parameters = images.parameters_text(prompt, job.negative_prompt, **{
        "Steps": job.steps, "Sampler": metadata["sampler"], "CFG scale": job.guidance, "Seed": job.seed,
        "Size": f"{picture.width}x{picture.height}", "Model": metadata["model"], "Job type": job.job_type,
    })
    return runtime.Output(data=images.encode_png(picture, parameters), extension="png", preview=picture,
                          width=picture.width, height=picture.height, metadata={"seed": job.seed})


def encode_video(job, frames):
    """The frames as an MP4 runtime.Output whose thumbnail is the middle frame."""
    fps = job_types.VIDEO_FPS
    count, height, width = frames.shape[:3]
    metadata = {"fps": fps, "frame_count": count, "duration": round(count / fps, 4), "codec": "h264",
                "seed": job.seed}
    # encode_mp4 pads odd sides to even ones.
    return runtime.Output(data=video.encode_mp4(frames, fps), extension="mp4",
                          preview=Image.fromarray(frames[count // 2]), width=width + width % 2,
                          height=height + height % 2, metadata=metadata)
