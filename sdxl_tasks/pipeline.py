"""The SDXL pool's rendering: one pipeline per worker process, all images of a job in one batch."""

import contextlib
import math
import time
from typing import NamedTuple

import numpy as np
import torch
from diffusers import StableDiffusionXLImg2ImgPipeline
from django.conf import settings

from generation import job_types
from generation.models import ReferenceType
from generation.worker import images, pipelines, previews, runtime

from . import adapters, loading

# reference_strength is how much of the reference survives (the API's 0.1..1);
# img2img strength is how much noise replaces it, so the two run in opposite directions.
MIN_DENOISE = 0.1  # with no noise added there is nothing to denoise
# A batch that does not fit in GPU memory is retried in chunks of these sizes.
CHUNK_SIZES = (3, 1)


class Loaded(NamedTuple):
    """What an SDXL worker keeps loaded: the pipeline, an img2img pipeline sharing its weights (for
    composition references) and the IP-Adapter (style and character references), if configured."""

    pipe: object
    img2img: object
    adapter: object


def load():
    """The Loaded pipelines, loaded and warmed up on first use in this process."""
    key = (settings.SDXL_MODEL_PATH, settings.SDXL_CONFIG_PATH, settings.SDXL_IP_ADAPTER_PATH,
           pipelines.torch_device())
    return pipelines.load_once("sdxl", key, lambda: _load(*key))


def _load(path, config_path, adapter_path, device):
    # float16 halves memory and time on a GPU. The SDXL VAE overflows in float16; its config's
    # force_upcast (on for the stock VAE) makes the pipeline decode in float32.
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    start = time.perf_counter()
    pipe = loading.load_pipeline(path, config_path, dtype).to(device)
    pipe.set_progress_bar_config(disable=True)
    adapter = None
    if adapter_path:
        adapter = adapters.IPAdapter(pipe, adapter_path, settings.SDXL_IP_ADAPTER_WEIGHT,
                                     settings.SDXL_IP_ADAPTER_IMAGE_ENCODER)
    compiled = optimize(pipe, device)
    loaded = time.perf_counter()
    if compiled:
        warm_up(pipe, job_types.NUM_IMAGES_CHOICES, all_sizes=True)
    else:
        warm_up(pipe)
    pipelines.report_loaded(
        "sdxl", path, device, dtype, loaded - start, compiled=compiled,
        warmup_seconds=round(time.perf_counter() - loaded, 2), ip_adapter=adapter.name if adapter else None,
        reference_types=sorted({"composition"} | ({"style", "character"} if adapter else set())),
    )
    img2img = StableDiffusionXLImg2ImgPipeline.from_pipe(pipe)  # the same modules: no second copy in memory
    img2img.set_progress_bar_config(disable=True)
    return Loaded(pipe, img2img, adapter)


def optimize(pipe, device):
    """The worker's GPU set-up (the benchmark applies it too): channels-last memory and a compiled
    UNet. True if compiled."""
    return pipelines.compile_on_gpu(pipe, device, "unet", settings.SDXL_COMPILE, settings.SDXL_COMPILE_MODE,
                                    channels_last=True)


def warm_up(pipe, batches=(1,), all_sizes=False):
    """pipelines.warm_up for SDXL: each of `batches` at each size."""
    pipelines.warm_up(pipe, "sdxl_image_fast", all_sizes,
                      lambda params: [{"num_images_per_prompt": batch} for batch in batches])


def denoise_strength(reference_strength):
    """img2img strength for a job's reference_strength: 1 - reference_strength, at least MIN_DENOISE."""
    if reference_strength is None:
        reference_strength = job_types.REFERENCE_STRENGTH_DEFAULT
    return min(1.0, max(MIN_DENOISE, 1.0 - reference_strength))


def img2img_steps(steps, strength):
    """Scheduler steps so that img2img, which skips the first (1 - strength) of them, runs `steps`."""
    total = max(steps, math.ceil(steps / strength))
    while int(total * strength) < steps:  # float rounding in diffusers' int(total * strength)
        total += 1
    return total


def seeds(job):
    """Image i of a job uses seed + i, so any image can be regenerated alone."""
    return [(job.seed + i) % 2**32 for i in range(job.num_images)]


def check_params(job, pipe):
    """Refuse impossible parameters before touching the GPU, with a message for the user."""
    multiple = pipe.vae_scale_factor * 2 ** (len(pipe.unet.config.block_out_channels) - 1)
    if job.width % multiple or job.height % multiple:
        raise runtime.JobError(f"Width and height must be multiples of {multiple}; got {job.width}×{job.height}.")
    if job.steps < 1 or job.guidance < 0 or job.num_images not in job_types.NUM_IMAGES_CHOICES:
        raise runtime.JobError(f"Invalid parameters: {job.steps} steps, guidance {job.guidance}, "
                               f"{job.num_images} images.")


def generate(run):
    """Render every image of `run.job` in one batched call; returns a list of runtime.Output."""
    job = run.job
    with run.timed("load"):
        loaded = load()
    pipe, adapter = loaded.pipe, loaded.adapter
    check_params(job, pipe)
    kwargs = {
        "prompt": job.prompt, "negative_prompt": job.negative_prompt or None, "width": job.width,
        "height": job.height, "num_inference_steps": job.steps, "guidance_scale": job.guidance,
        "output_type": "np",
    }
    conditioning = contextlib.nullcontext()
    strength = None
    if job.reference_type:
        with run.timed("load"):
            reference = pipelines.reference_picture(job)
        run.metadata["reference"] = {"id": job.reference_image_id, "type": job.reference_type,
                                     "reference_strength": job.reference_strength,
                                     "size": list(reference.size)}
        if job.reference_type == ReferenceType.COMPOSITION:
            pipe, strength = loaded.img2img, denoise_strength(job.reference_strength)
            kwargs.update(image=reference, strength=strength, num_inference_steps=img2img_steps(job.steps, strength))
            run.metadata["reference"]["denoise_strength"] = round(strength, 4)
        elif adapter is None:
            # Submission refuses this; a job queued before the adapter was removed fails clearly.
            raise runtime.JobError(f"reference_type '{job.reference_type}' needs IP-Adapter weights, "
                                   "which this SDXL worker does not have.")
        else:
            conditioning = adapter.applied(pipe, job.reference_type, job.reference_strength)
            kwargs["ip_adapter_image"] = reference
            run.metadata["reference"]["ip_adapter"] = adapter.name

    run.metadata.update(model=pipelines.model_name(settings.SDXL_MODEL_PATH),
                        sampler=pipelines.sampler_name(pipe), device=str(pipe.device),
                        dtype=pipelines.dtype_name(pipe.unet.dtype),
                        pipeline="img2img" if strength is not None else "text2img")
    image_seeds = seeds(job)
    with run.timed_steps("denoise", "decode"), conditioning:
        pixels = render(run, pipe, kwargs, image_seeds)
    pipelines.check_finite(pixels)

    with run.timed("encode"):
        pictures = pipe.image_processor.numpy_to_pil(pixels)
        return [encode(job, index, picture, seed, run.metadata, strength)
                for index, (picture, seed) in enumerate(zip(pictures, image_seeds, strict=True))]


def render(run, pipe, kwargs, image_seeds):
    """All images in one pipeline call; when the GPU runs out of memory, free it and go on in
    smaller chunks (6 -> 3 -> 1). Fails only if a single image does not fit."""
    pending, outputs, size, calls = list(image_seeds), [], len(image_seeds), 0
    previewer = previews.previewer("sdxl")
    while pending:
        chunk = pending[:size]
        calls_total = calls + math.ceil(len(pending) / size)
        try:
            outputs.append(call(pipe, kwargs, chunk, pipelines.StepReport(run, calls, calls_total, previewer)))
        except torch.cuda.OutOfMemoryError as exc:
            pipelines.free_memory()
            run.metadata.setdefault("out_of_memory", []).append({"batch": len(chunk), "error": str(exc)[:200]})
            smaller = [s for s in CHUNK_SIZES if s < len(chunk)]
            if not smaller:
                raise runtime.JobError(f"The GPU ran out of memory even for one {kwargs['width']}×"
                                       f"{kwargs['height']} image.") from exc
            size = smaller[0]
            continue
        except runtime.JobCancelled:
            pipelines.free_memory()
            raise
        pending, calls = pending[size:], calls + 1
    if calls > 1:
        run.metadata["batches"] = [len(o) for o in outputs]
    return np.concatenate(outputs)


def call(pipe, kwargs, chunk_seeds, callback):
    """One pipeline call for `chunk_seeds`, each image with its own CPU generator (the same starting
    noise on every device, so a seed means one picture)."""
    generators = [torch.Generator("cpu").manual_seed(seed) for seed in chunk_seeds]
    return pipe(**kwargs, num_images_per_prompt=len(chunk_seeds), generator=generators,
                callback_on_step_end=callback).images  # float array (n, h, w, 3) in 0..1


def encode(job, index, picture, seed, metadata, strength=None):
    """One image as a runtime.Output: PNG with its generation parameters, for the runtime to store."""
    parameters = images.parameters_text(job.prompt, job.negative_prompt, **{
        "Steps": job.steps, "Sampler": metadata["sampler"], "CFG scale": job.guidance, "Seed": seed,
        "Size": f"{job.width}x{job.height}", "Model": metadata["model"],
        "Denoising strength": round(strength, 4) if strength is not None else None,
        "Reference": job.reference_type or None,
        "Job type": job.job_type,
    })
    return runtime.Output(data=images.encode_png(picture, parameters), extension="png", preview=picture,
                          width=picture.width, height=picture.height, index=index, metadata={"seed": seed})
