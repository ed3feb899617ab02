"""The job-type table: every per-type number lives here, and everything else reads it.

Figures are the replaced system's production measurements (RTX 6000 Ada). The "dev" profile
derives smaller sizes, steps and frames from the same rows for the tiny development models.
"""

from dataclasses import dataclass

from django.conf import settings


@dataclass(frozen=True)
class Pool:
    name: str
    label: str  # the model's name as the pages show it
    queue: str
    task: str  # Celery task name; the web tier sends by name and never imports the pool
    aspect_ratios: dict  # "w:h" -> (width, height)


POOLS = {
    "sdxl": Pool(
        name="sdxl",
        label="SDXL",
        queue="sdxl_queue",
        task="sdxl.generate",
        aspect_ratios={"1:1": (1024, 1024), "16:9": (1344, 768), "9:16": (768, 1344)},
    ),
    "wan": Pool(
        name="wan",
        label="WAN",
        queue="wan_queue",
        task="wan.generate",
        aspect_ratios={"1:1": (624, 624), "16:9": (832, 480), "9:16": (480, 832)},
    ),
}


@dataclass(frozen=True)
class JobType:
    name: str
    pool: str
    format: str  # "png" or "mp4"
    quality: str  # "fast" or "high"
    steps: int
    guidance: float
    width: int
    height: int
    frames: int  # 0 for SDXL (no time axis); WAN needs 4k+1
    expected_seconds: float  # per image for SDXL, per job otherwise
    credits: int
    enhanced: bool = False
    model_type: str = ""

    @property
    def queue(self):
        return POOLS[self.pool].queue

    @property
    def task(self):
        return POOLS[self.pool].task

    @property
    def kind(self):
        return "video" if self.format == "mp4" else "image"

    @property
    def label(self):
        """The type's name for people (pages, API): "SDXL image · fast", "WAN video · high · enhanced"."""
        return f"{POOLS[self.pool].label} {self.kind} · {self.quality}" + (" · enhanced" if self.enhanced else "")

    @property
    def bucket(self):
        # S3 bucket names allow no underscores.
        return self.name.replace("_", "-")

    @property
    def batched(self):
        """Only SDXL generates several images per job (1, 3 or 6)."""
        return self.pool == "sdxl"

    def expected_total(self, num_images=1, per_unit=None):
        """Seconds a job of this type runs: `per_unit` (this table's figure unless given, e.g. measured)
        per image for SDXL, per job otherwise."""
        per_unit = self.expected_seconds if per_unit is None else per_unit
        return per_unit * (num_images if self.batched else 1)

    def time_limit(self, num_images=1):
        """Seconds after which a running job is stopped and marked failed (Celery's soft limit)."""
        limit = self.expected_total(num_images) * settings.JOB_TIME_LIMIT_FACTOR
        return int(max(limit, settings.JOB_TIME_LIMIT_FLOOR))

    def hard_time_limit(self, num_images=1):
        """Seconds after which Celery kills the worker process if the soft limit went unheeded."""
        return self.time_limit(num_images) + HARD_LIMIT_GRACE


def _row(name, pool, fmt, quality, steps, guidance, size, frames, expected, credits, enhanced=False):
    model_type = {"sdxl": "sdxl"}.get(pool, "wan_enhanced" if enhanced else "wan")
    return JobType(name, pool, fmt, quality, steps, guidance, size[0], size[1], frames, expected,
                   credits, enhanced, model_type)


JOB_TYPES = {
    t.name: t
    for t in [
        _row("sdxl_image_fast", "sdxl", "png", "fast", 15, 6.0, (1024, 1024), 0, 4, 1),
        _row("sdxl_image_high", "sdxl", "png", "high", 25, 7.5, (1024, 1024), 0, 8, 2),
        _row("image_fast", "wan", "png", "fast", 25, 6.5, (480, 832), 1, 25, 1),
        _row("image_high", "wan", "png", "high", 50, 7.5, (480, 832), 1, 40, 2),
        _row("video_fast", "wan", "mp4", "fast", 25, 6.5, (480, 832), 81, 135, 3),
        _row("video_high", "wan", "mp4", "high", 50, 7.5, (480, 832), 81, 180, 5),
        _row("image7b_fast_enhanced", "wan", "png", "fast", 25, 6.5, (480, 832), 1, 85, 2, True),
        _row("image7b_high_enhanced", "wan", "png", "high", 50, 7.5, (480, 832), 1, 100, 3, True),
        _row("video7b_fast_enhanced", "wan", "mp4", "fast", 25, 6.5, (480, 832), 81, 195, 4, True),
        _row("video7b_high_enhanced", "wan", "mp4", "high", 50, 7.5, (480, 832), 81, 240, 6, True),
    ]
}

# What a request may ask for. The API validates against these, the pages render them and the
# Workspace's script reads them from the page's data: each is written here only.
NUM_IMAGES_CHOICES = (1, 3, 6)
ASPECT_RATIOS = ("1:1", "16:9", "9:16")  # every pool has a size for each (Pool.aspect_ratios)
MAX_SEED = 2**32 - 1
PROMPT_MAX_LENGTH = 2000
NEGATIVE_PROMPT_MAX_LENGTH = 1000
# A reference's strength: how much of the reference image survives in the result.
REFERENCE_STRENGTH_MIN, REFERENCE_STRENGTH_MAX, REFERENCE_STRENGTH_DEFAULT = 0.1, 1.0, 0.7

HARD_LIMIT_GRACE = 60
VIDEO_FPS = 16

# The dev profile divides sizes by this and rounds to a multiple of 16 (WAN's latent patch),
# and divides steps and video length (in 4-frame units) by the step/frame divisors.
DEV_SIZE_DIVISOR = 16
DEV_STEP_DIVISOR = 5
DEV_FRAME_DIVISOR = 10


def get(name):
    """The JobType called `name`; KeyError when there is none."""
    return JOB_TYPES[name]


def label(name):
    """The display name of the type called `name`; the name itself for a type no longer in the table."""
    return JOB_TYPES[name].label if name in JOB_TYPES else name


def aspect_ratios(job_type):
    return POOLS[job_type.pool].aspect_ratios


def render_params(job_type, aspect_ratio=None):
    """Size, steps and frames a worker renders for this type in the configured profile."""
    width, height = job_type.width, job_type.height
    if aspect_ratio:
        width, height = aspect_ratios(job_type)[aspect_ratio]
    steps, frames = job_type.steps, job_type.frames
    if settings.OURVIDZ_PROFILE == "dev":
        width, height = (max(16, round(v / DEV_SIZE_DIVISOR / 16) * 16) for v in (width, height))
        steps = max(2, steps // DEV_STEP_DIVISOR)
        if frames > 1:
            frames = 4 * max(1, (frames - 1) // 4 // DEV_FRAME_DIVISOR) + 1
    return {"width": width, "height": height, "steps": steps, "guidance": job_type.guidance,
            "frames": frames}


def limits():
    """The request limits above, for the pages and their scripts (json_script data)."""
    return {
        "num_images": list(NUM_IMAGES_CHOICES), "aspect_ratios": list(ASPECT_RATIOS), "max_seed": MAX_SEED,
        "prompt_max_length": PROMPT_MAX_LENGTH, "negative_prompt_max_length": NEGATIVE_PROMPT_MAX_LENGTH,
        "reference_strength_min": REFERENCE_STRENGTH_MIN, "reference_strength_max": REFERENCE_STRENGTH_MAX,
        "reference_strength_default": REFERENCE_STRENGTH_DEFAULT,
    }


def max_hard_time_limit():
    return max(t.hard_time_limit(max(NUM_IMAGES_CHOICES)) for t in JOB_TYPES.values())
