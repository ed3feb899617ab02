"""What Job.metadata and Image/Video.metadata hold: the one description of those JSON columns.

Each key says which module writes it. Every key is optional (`total=False`): a job gets the keys of
the steps it went through. Readers (the Library's detail page, API clients) use `.get`.
"""

from typing import TypedDict


def parameters_text(prompt, negative_prompt, **params):
    """Generation parameters in the `parameters` text-chunk convention other SDXL tools read (A1111's):
    what a PNG carries, and what a job's zip download says of each file."""
    lines = [prompt]
    if negative_prompt:
        lines.append(f"Negative prompt: {negative_prompt}")
    lines.append(", ".join(f"{key}: {value}" for key, value in params.items() if value not in (None, "")))
    return "\n".join(lines)


class Reference(TypedDict, total=False):
    """How a job used its reference image (both pools)."""

    id: int  # the ReferenceImage
    type: str  # "style", "composition" or "character"
    reference_strength: float  # as asked
    size: list[int]  # [width, height] after the resize and crop to the job's size
    denoise_strength: float  # SDXL composition (img2img): 1 - reference_strength, at least 0.1
    ip_adapter: str  # SDXL style / character: "<folder>/<weights file>"
    model: str  # WAN image-to-video: the I2V model's name


class Enhancement(TypedDict, total=False):
    """The prompt enhancer's rewrite (WAN `*_enhanced` types)."""

    original: str
    enhanced: str | None  # None when the rewrite failed
    error: str | None  # why it failed; the original prompt was rendered
    model: str  # the enhancer's name


class OutOfMemory(TypedDict, total=False):
    """One render that ran out of GPU memory, and what was tried next."""

    error: str  # the first 200 characters of torch's message
    batch: int  # SDXL: the batch size that did not fit (retried in smaller chunks)
    retry: str  # WAN: "VAE tiling and slicing"


class Attempt(TypedDict, total=False):
    """One start of a job by a worker."""

    worker: str  # the worker's node name ("sdxl-gpu1@host")
    host: str  # the machine's host name
    started_at: str  # ISO 8601, the database's clock


class JobMetadata(TypedDict, total=False):
    # generation.worker.runtime, each time a worker starts the job
    attempts: list[Attempt]  # oldest first; the API shows them to staff only
    # generation.submission, when the job is created
    user_negative_prompt: str  # what the user typed; Job.negative_prompt is what ran
    multi_party: list[str]  # SDXL: why group terms were added to the negative prompt
    negative_terms_dropped: list[str]  # SDXL: terms cut to fit the text encoder's window
    # generation.worker.runtime, when the job ends
    timings: dict[str, float]  # seconds per phase: load, enhance, denoise, decode, encode, generate, store
    # the pool's generate (sdxl_tasks.pipeline, wan_tasks.pipeline)
    model: str  # the model's short name (folder or checkpoint file)
    pipeline: str  # SDXL "text2img" / "img2img"; WAN "t2v" / "i2v"
    sampler: str  # the scheduler, by the name other tools use ("Euler", "UniPC" ...)
    device: str
    dtype: str
    reference: Reference
    enhancement: Enhancement
    guidance_stop_step: int  # WAN: the step after which guidance stops (WAN_GUIDANCE_STOP < 1)
    batches: list[int]  # SDXL: chunk sizes when the batch was split after running out of memory
    out_of_memory: list[OutOfMemory]
    # generation.tasks (housekeeping) and generation.worker.runtime
    stalled: bool  # failed by the time-limit reaper: it ran far past its limit
    worker_deaths: int  # failed because its worker died that many times while running it


class AssetMetadata(TypedDict, total=False):
    """Image.metadata / Video.metadata, from the pool's Output."""

    seed: int  # the seed that renders this very file (an SDXL batch image: job seed + index)
    fps: int  # video
    frame_count: int  # video
    duration: float  # video, seconds
    codec: str  # video: "h264"
