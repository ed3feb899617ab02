"""Files people download: the names they are saved under, and a finished job's files in one zip.

The zip holds the job's images (or its video) as stored, under their download names, and
`parameters.txt`: for each file, its name and then its generation parameters in the `parameters`
text convention other SDXL tools read (the text the PNGs carry), a blank line between files.
"""

import shutil
import zipfile

from django.utils import timezone

from . import metadata, storage
from .models import Image, JobStatus

PARAMETERS_FILE = "parameters.txt"
CHUNK = 1024 * 1024


class NotFinished(Exception):
    """The job has not completed: it has no files to download (yet, or ever)."""


def asset_seed(asset):
    """The seed that renders this very asset: an SDXL batch image has its own (job seed + index)."""
    seed = getattr(asset, "seed", None)
    return asset.job.seed if seed is None else seed


def file_name(asset):
    """A file name that says what the file is: ourvidz-<job type>-<seed>[-<index>].<ext>."""
    extension = asset.path.rsplit(".", 1)[-1]
    batch = isinstance(asset, Image) and asset.job.num_images > 1
    index = f"-{asset.image_index + 1}" if batch else ""
    return f"ourvidz-{asset.job.job_type}-{asset_seed(asset)}{index}.{extension}"


def zip_name(job):
    """The name a job's zip is saved under: ourvidz-<job type>-<seed>.zip."""
    return f"ourvidz-{job.job_type}-{job.seed}.zip"


def job_assets(job):
    """A job's stored files in their order: its images by index, or its video."""
    images = list(job.images.order_by("image_index"))
    video = getattr(job, "video", None) if job.format == "mp4" else None
    return images + ([video] if video else [])


def parameters(asset):
    """One file's generation parameters as parameters_text writes them (what the PNGs carry)."""
    job = asset.job
    meta = job.metadata or {}
    params = {
        "Steps": job.steps, "Sampler": meta.get("sampler"), "CFG scale": job.guidance, "Seed": asset_seed(asset),
        "Size": f"{asset.width}x{asset.height}", "Model": meta.get("model"),
        "Denoising strength": (meta.get("reference") or {}).get("denoise_strength"),
        "Reference": job.reference_type or None, "Job type": job.job_type,
    }
    if not isinstance(asset, Image):
        params.update({"Frames": asset.frame_count or job.frames, "FPS": asset.fps or None})
    return metadata.parameters_text(job.enhanced_prompt or job.prompt, job.negative_prompt, **params)


def write_job_zip(job, target):
    """Write a completed job's files and parameters.txt as a zip into `target` (a binary file), copying
    each file from storage in chunks. Slow I/O: call it outside any transaction. NotFinished otherwise."""
    if job.status != JobStatus.COMPLETED:
        raise NotFinished(f"The job is {job.status}: only a completed job has files to download.")
    backend = storage.get_storage()
    texts = []
    with zipfile.ZipFile(target, "w") as archive:
        for asset in job_assets(job):
            name = file_name(asset)
            # Stored as they are (ZipInfo's default): PNG and MP4 are compressed already.
            entry = zipfile.ZipInfo(name, date_time=timezone.localtime(asset.created_at).timetuple()[:6])
            with backend.open(asset.bucket, asset.path) as source, archive.open(entry, "w", force_zip64=True) as out:
                shutil.copyfileobj(source, out, CHUNK)
            texts.append(f"{name}\n{parameters(asset)}\n")
        archive.writestr(PARAMETERS_FILE, "\n".join(texts), compress_type=zipfile.ZIP_DEFLATED)
    return target
