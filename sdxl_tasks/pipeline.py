"""The SDXL pool's rendering: one pipeline per worker process, all images of a job in one batch."""

import math
import time

import torch
from diffusers import StableDiffusionXLImg2ImgPipeline, StableDiffusionXLPipeline
from django.conf import settings
from PIL import ImageOps
from PIL.Image import Resampling

from generation import images, pipelines, references, runtime
from generation.models import ReferenceType

# reference_strength is how much of the reference survives (the API's 0.1..1, default 0.7);
# img2img strength is how much noise replaces it, so the two run in opposite directions.
DEFAULT_REFERENCE_STRENGTH = 0.7
MIN_DENOISE = 0.1  # with no noise added there is nothing to denoise

_cache = {}  # the loaded pipelines, kept for the life of the worker process


def load():
    """The text-to-image pipeline, loaded on first use in this process and reused afterwards."""
    key = (settings.SDXL_MODEL_PATH, pipelines.torch_device())
    if _cache.get("key") != key:
        _cache.clear()
        _cache["pipe"] = _load(*key)
        _cache["key"] = key
    return _cache["pipe"]


def _load(path, device):
    # float16 halves memory and time on a GPU. The SDXL VAE overflows in float16; its config's
    # force_upcast (on for the stock VAE) makes the pipeline decode in float32.
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    start = time.perf_counter()
    pipe = StableDiffusionXLPipeline.from_pretrained(path, dtype=dtype, local_files_only=True)
    pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    pipelines.report_loaded("sdxl", path, device, dtype, time.perf_counter() - start)
    return pipe


def load_img2img():
    """An img2img pipeline sharing the loaded weights (no second copy in memory)."""
    pipe = load()
    if "img2img" not in _cache:
        img2img = StableDiffusionXLImg2ImgPipeline.from_pipe(pipe)
        img2img.set_progress_bar_config(disable=True)
        _cache["img2img"] = img2img
    return _cache["img2img"]


def denoise_strength(reference_strength):
    """img2img strength for a job's reference_strength: 1 - reference_strength, at least MIN_DENOISE."""
    if reference_strength is None:
        reference_strength = DEFAULT_REFERENCE_STRENGTH
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


def reference_image(job):
    """The job's composition reference, resized and center-cropped to the job's size."""
    if job.reference_type != ReferenceType.COMPOSITION:
        # Submission refuses other types; a job queued under an older rule fails rather than
        # silently ignoring what the user asked for.
        raise runtime.JobError(f"The SDXL pool does not support reference_type '{job.reference_type}'.")
    if job.reference_image is None:
        raise runtime.JobError("The reference image was deleted before the job ran.")
    picture = references.load_reference(job.reference_image)
    return ImageOps.fit(picture, (job.width, job.height), Resampling.LANCZOS)


def generate(run):
    """Render every image of `run.job` in one batched call; returns a list of runtime.Output."""
    job = run.job
    with run.timed("load"):
        pipe = load()
    image_seeds = seeds(job)
    # CPU generators give the same starting noise on every device, so a seed means one picture.
    generators = [torch.Generator("cpu").manual_seed(seed) for seed in image_seeds]

    kwargs = {
        "prompt": job.prompt, "negative_prompt": job.negative_prompt or None,
        "num_images_per_prompt": job.num_images, "generator": generators, "width": job.width,
        "height": job.height, "num_inference_steps": job.steps, "guidance_scale": job.guidance,
        "output_type": "np", "callback_on_step_end": pipelines.step_callback(run),
    }
    strength = None
    if job.reference_type:
        strength = denoise_strength(job.reference_strength)
        with run.timed("load"):
            pipe = load_img2img()
            reference = reference_image(job)
        kwargs.update(image=reference, strength=strength,
                      num_inference_steps=img2img_steps(job.steps, strength))
        run.metadata["reference"] = {"id": job.reference_image_id, "type": job.reference_type,
                                     "reference_strength": job.reference_strength,
                                     "denoise_strength": round(strength, 4)}

    run.metadata.update(model=pipelines.model_name(settings.SDXL_MODEL_PATH),
                        sampler=pipelines.sampler_name(pipe), device=str(pipe.device),
                        dtype=pipelines.dtype_name(pipe.unet.dtype),
                        pipeline="img2img" if strength is not None else "text2img")
    with run.timed("denoise"):
        try:
            pixels = pipe(**kwargs).images  # float array (n, h, w, 3) in 0..1
        except torch.cuda.OutOfMemoryError as exc:
            torch.cuda.empty_cache()
            raise runtime.JobError(f"The GPU ran out of memory rendering {job.num_images} images at "
                                   f"{job.width}×{job.height}; try fewer images.") from exc
    pipelines.check_finite(pixels)

    with run.timed("encode"):
        pictures = pipe.image_processor.numpy_to_pil(pixels)
        return [encode(job, index, picture, seed, run.metadata, strength)
                for index, (picture, seed) in enumerate(zip(pictures, image_seeds, strict=True))]


def encode(job, index, picture, seed, metadata, strength=None):
    """One image as a runtime.Output: PNG with its generation parameters, for the runtime to store."""
    parameters = images.parameters_text(job.prompt, job.negative_prompt, **{
        "Steps": job.steps, "Sampler": metadata["sampler"], "CFG scale": job.guidance, "Seed": seed,
        "Size": f"{job.width}x{job.height}", "Model": metadata["model"],
        "Denoising strength": round(strength, 4) if strength is not None else None,
        "Job type": job.job_type,
    })
    return runtime.Output(data=images.encode_png(picture, parameters), extension="png", preview=picture,
                          width=picture.width, height=picture.height, index=index, metadata={"seed": seed})
