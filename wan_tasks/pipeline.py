"""The WAN 2.1 pool: the pipeline (and the prompt enhancer) loaded once per worker process, and
the pool's `generate`."""

import logging
import math
import time
from pathlib import Path

import numpy as np
import torch
from celery.exceptions import SoftTimeLimitExceeded
from diffusers import WanPipeline
from diffusers.callbacks import MultiPipelineCallbacks, PipelineCallback
from django.conf import settings
from PIL import Image

from generation import job_types
from generation.worker import images, model_folders, pipelines, previews, runtime

from . import enhancer, i2v, video

log = logging.getLogger(__name__)


def get_pipeline():
    """The WanPipeline for the configured path and device, loaded on first use in this process
    (with the image-to-video pipeline beside it when WAN_I2V_MODEL_PATH is set)."""
    key = (settings.WAN_MODEL_PATH, settings.WAN_I2V_MODEL_PATH, pipelines.torch_device())
    return pipelines.load_once("wan", key, lambda: _load(*key))


def get_i2v_pipeline():
    """The WanImageToVideoPipeline sharing get_pipeline()'s text encoder and VAE; None when
    WAN_I2V_MODEL_PATH is empty."""
    pipe = get_pipeline()
    return i2v.get_i2v(pipe, settings.WAN_I2V_MODEL_PATH) if settings.WAN_I2V_MODEL_PATH else None


def check_models():
    """Refuse to start on a wrong model path (reads configs and safetensors headers, no weights; runs
    before the worker forks)."""
    model_folders.check_folder(settings.WAN_MODEL_PATH, "WAN_MODEL_PATH", {"WanPipeline"})
    enhancer_config = Path(settings.ENHANCER_MODEL_PATH) / "config.json"
    if not enhancer_config.is_file():
        raise model_folders.ModelConfigError(
            f"ENHANCER_MODEL_PATH={settings.ENHANCER_MODEL_PATH}: not a transformers model folder (no config.json).")
    if settings.WAN_I2V_MODEL_PATH:
        i2v.check_i2v_model(settings.WAN_I2V_MODEL_PATH, settings.WAN_MODEL_PATH)


def _load(path, i2v_path, device):
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
    compiled = optimize(pipe, device)
    # Image-to-video shares the text encoder and VAE just loaded: only its transformer and image encoder
    # are new in memory.
    i2v_pipe = i2v.get_i2v(pipe, i2v_path) if i2v_path else None
    if i2v_pipe is not None:
        optimize(i2v_pipe, device)
    offload = enhancer.should_offload(
        settings.ENHANCER_OFFLOAD, device,
        torch.cuda.get_device_properties(device).total_memory if device.type == "cuda" else 0,
        sum(enhancer.size_bytes(m) for m in (pipe.transformer, pipe.text_encoder, pipe.vae) + i2v_models(i2v_pipe)),
        enhancer.size_bytes(enhancer.get_enhancer().model), settings.WAN_MEMORY_RESERVE_GB * 2**30)
    enhancer.place(device, offload)
    loaded = time.perf_counter()
    warm_up(pipe, all_sizes=compiled)
    if i2v_pipe is not None:
        warm_up(i2v_pipe, all_sizes=compiled, reference=True)
    pipelines.report_loaded("wan", path, device, pipe.transformer.dtype, loaded - start, compiled=compiled,
                            warmup_seconds=round(time.perf_counter() - loaded, 2),
                            vae_dtype=pipelines.dtype_name(pipe.vae.dtype), enhancer=enhancer.model_name(),
                            enhancer_offloaded=offload,
                            i2v=pipelines.model_name(i2v_path) if i2v_pipe is not None else None,
                            # what submission accepts on video types (generation.capabilities)
                            reference_types=["composition"] if i2v_pipe is not None else [])
    return pipe


def i2v_models(i2v_pipe):
    """The image-to-video pipeline's own modules (the text encoder and VAE are shared)."""
    if i2v_pipe is None:
        return ()
    return tuple(m for m in (i2v_pipe.transformer, i2v_pipe.transformer_2, i2v_pipe.image_encoder) if m is not None)


def optimize(pipe, device):
    """The worker's GPU set-up (the benchmark applies it too): a compiled transformer. True if compiled."""
    return pipelines.compile_on_gpu(pipe, device, "transformer", settings.WAN_COMPILE, settings.WAN_COMPILE_MODE)


def warm_up(pipe, all_sizes=False, reference=False):
    """pipelines.warm_up for WAN videos; `reference`: an image-to-video pipeline, given a blank first frame."""
    def variants(params):
        first_frame = {"image": Image.new("RGB", (params["width"], params["height"]))} if reference else {}
        return [{"num_frames": params["frames"], **first_frame}]

    pipelines.warm_up(pipe, "video_fast", all_sizes, variants)


def generate(run):
    """Render `run.job` (enhancing its prompt first for enhanced types) into one PNG or MP4 Output."""
    job = run.job
    with run.timed("load"):
        pipe = get_pipeline()
    model_path, reference_kwargs = settings.WAN_MODEL_PATH, {}
    if job.reference_type:
        # A video from a reference image: image-to-video, the reference as the first frame.
        with run.timed("load"):
            i2v_pipe = get_i2v_pipeline()
            if i2v_pipe is None:
                # Submission refuses this; a job queued before the model was removed fails clearly.
                raise runtime.JobError(f"{job.job_type} cannot start from a reference image: this WAN worker "
                                       "has no image-to-video model (WAN_I2V_MODEL_PATH).")
            reference = pipelines.reference_picture(job)
        reference_kwargs = i2v.i2v_kwargs(job, reference, i2v_pipe)  # refuses image types, odd sizes
        run.metadata["reference"] = i2v.reference_metadata(job, reference, settings.WAN_I2V_MODEL_PATH)
        pipe, model_path = i2v_pipe, settings.WAN_I2V_MODEL_PATH
    prompt = enhance_prompt(run, job.prompt) if job.type.enhanced else job.prompt
    run.metadata.update(model=pipelines.model_name(model_path),
                        sampler=pipelines.sampler_name(pipe), device=str(pipe.device),
                        dtype=pipelines.dtype_name(pipe.transformer.dtype),
                        pipeline="i2v" if reference_kwargs else "t2v")
    kwargs = {
        "prompt": prompt, "negative_prompt": job.negative_prompt or None, "height": job.height,
        "width": job.width, "num_frames": job.frames if job.type.kind == "video" else 1,
        "num_inference_steps": job.steps, "guidance_scale": job.guidance, "output_type": "np",
        **reference_kwargs,
    }
    with run.timed_steps("denoise", "decode"):
        frames = render(run, pipe, kwargs, job.seed)
    pipelines.check_finite(frames)
    frames = (frames * 255).round().clip(0, 255).astype(np.uint8)

    with run.timed("encode"):
        if job.type.kind == "video":
            return [encode_video(job, frames)]
        return [encode_image(job, frames[0], prompt, run.metadata)]


def render(run, pipe, kwargs, seed):
    """The frames of one pipeline call; on GPU out-of-memory, free it, tile the VAE and retry once."""
    try:
        return call(run, pipe, kwargs, seed)
    except runtime.JobCancelled:
        pipelines.free_memory()
        raise
    except torch.cuda.OutOfMemoryError as exc:
        pipelines.free_memory()
        run.metadata.setdefault("out_of_memory", []).append({"error": str(exc)[:200],
                                                             "retry": "VAE tiling and slicing"})
    # Decoding all frames at once is the peak; tiles and slices trade a little time for memory.
    pipe.vae.enable_tiling()
    pipe.vae.enable_slicing()
    try:
        return call(run, pipe, kwargs, seed)
    except torch.cuda.OutOfMemoryError as exc:
        raise runtime.JobError(f"The GPU ran out of memory rendering {kwargs['width']}×{kwargs['height']} with "
                               f"{kwargs['num_frames']} frames, even with VAE tiling.") from exc
    finally:
        pipelines.free_memory()
        pipe.vae.disable_tiling()  # later jobs decode untiled again, exactly as before
        pipe.vae.disable_slicing()


class GuidanceCutoff(PipelineCallback):
    """Classifier-free guidance for the steps up to `cutoff_step_index` only; the remaining steps run
    the conditional pass alone (diffusers' SDCFGCutoffCallback, for WAN, whose pipeline reads a
    guidance scale of 1 as "no guidance")."""

    tensor_inputs = []

    def callback_fn(self, pipe, step_index, timestep, callback_kwargs):
        if step_index >= self.config.cutoff_step_index:
            pipe._guidance_scale = 1.0
        return callback_kwargs


def call(run, pipe, kwargs, seed):
    """One pipeline call: float frames (n, h, w, 3) in 0..1. Guidance stops after WAN_GUIDANCE_STOP
    of the steps; a CPU generator gives the same starting noise on every device."""
    callbacks = [pipelines.StepReport(run, previewer=previews.previewer("wan"))]
    stop = math.ceil(kwargs["num_inference_steps"] * settings.WAN_GUIDANCE_STOP)
    if stop < kwargs["num_inference_steps"]:
        run.metadata["guidance_stop_step"] = stop
        callbacks.insert(0, GuidanceCutoff(cutoff_step_ratio=None, cutoff_step_index=stop - 1))
    return pipe(**kwargs, generator=torch.Generator(device="cpu").manual_seed(seed),
                callback_on_step_end=MultiPipelineCallbacks(callbacks)).frames[0]


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
