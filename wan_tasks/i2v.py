"""Image-to-video for the WAN pool: a video job with a reference image starts from that picture.

    WAN_I2V_MODEL_PATH=/models/Wan2.1-I2V-14B-480P-Diffusers   # a WanImageToVideoPipeline folder

The WAN 2.1 image-to-video and text-to-video models share the UMT5 text encoder, its tokenizer and
the VAE, so `load_i2v` takes those from the loaded text-to-video pipeline (no second copy in memory)
and loads only what is the I2V model's own: its transformer, the CLIP image encoder and processor
and its scheduler settings. `check_i2v_model` validates a folder from file names and JSON alone (no
weights read, torch not imported), so a worker can refuse to start with a message naming the
variable. References are read from storage, never from a URL.
"""

import json
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

from generation import pipelines, references, runtime

MODEL_VAR = "WAN_I2V_MODEL_PATH"
PIPELINE_CLASS = "WanImageToVideoPipeline"
EXAMPLE = "Wan-AI/Wan2.1-I2V-14B-480P-Diffusers"
# Component -> the file its folder must hold; weights are checked for the models among them.
CONFIG_FILES = {"transformer": "config.json", "transformer_2": "config.json", "image_encoder": "config.json",
                "image_processor": "preprocessor_config.json", "scheduler": "scheduler_config.json"}
MODELS = ("transformer", "transformer_2", "image_encoder")
WEIGHT_FILES = [f"{stem}{ext}" for stem in ("diffusion_pytorch_model", "model", "pytorch_model")
                for ext in (".safetensors", ".bin", ".safetensors.index.json", ".bin.index.json")]


class I2VModelError(ImproperlyConfigured):
    """The image-to-video model configuration cannot work; the message names WAN_I2V_MODEL_PATH."""


def _read_json(path, where):
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise I2VModelError(f"{where}: {Path(path).name} cannot be read: {exc}") from exc
    if not isinstance(data, dict):
        raise I2VModelError(f"{where}: {Path(path).name} is not a JSON object.")
    return data


def check_i2v_model(path, t2v_path=None):
    """Raise I2VModelError unless `path` is a WanImageToVideoPipeline folder this worker can load
    beside the text-to-video model at `t2v_path` (when given: same text-encoder width and VAE
    latent channels). Reads JSON and file names only. Returns the I2V transformer's config."""
    if not path:
        raise I2VModelError(f"{MODEL_VAR} is empty: set it to a WAN image-to-video diffusers folder "
                            f"(e.g. {EXAMPLE}).")
    folder = Path(path)
    where = f"{MODEL_VAR}={folder}"
    if not folder.is_dir():
        raise I2VModelError(f"{where}: no such folder.")
    if not (folder / "model_index.json").is_file():
        raise I2VModelError(f"{where}: not a diffusers pipeline folder (no model_index.json).")
    index = _read_json(folder / "model_index.json", where)
    name = index.get("_class_name")
    if name != PIPELINE_CLASS:
        hint = " (a text-to-video model: that is WAN_MODEL_PATH's kind)" if name == "WanPipeline" else ""
        raise I2VModelError(f"{where}: model_index.json describes {name!r}{hint}, not a {PIPELINE_CLASS} "
                            f"(an image-to-video model such as {EXAMPLE}).")

    def listed(component):
        entry = index.get(component)
        return isinstance(entry, list) and bool(entry) and entry[0] is not None

    if not listed("transformer"):
        raise I2VModelError(f"{where}: model_index.json lists no transformer.")
    transformer_config = folder / "transformer" / "config.json"
    transformer = _read_json(transformer_config, where) if transformer_config.is_file() else {}
    required = ["transformer", "scheduler"]
    if listed("transformer_2"):
        required.append("transformer_2")  # WAN 2.2 A14B: a second, low-noise transformer
    if transformer.get("image_dim") is not None:
        required += ["image_encoder", "image_processor"]  # WAN 2.1: CLIP image tokens
    missing = [c for c in required if not listed(c) or not (folder / c).is_dir()]
    if missing:
        raise I2VModelError(f"{where}: no {', '.join(missing)} (a WAN 2.1 image-to-video pipeline has "
                            "transformer, image_encoder, image_processor and scheduler folders).")
    for component in required:
        names = {p.name for p in (folder / component).iterdir()}
        if CONFIG_FILES[component] not in names:
            raise I2VModelError(f"{where}: {component}/{CONFIG_FILES[component]} is missing.")
        if component in MODELS and not names & set(WEIGHT_FILES):
            raise I2VModelError(f"{where}: no weights in {component}/ (expected one of "
                                f"{', '.join(WEIGHT_FILES[:2])} or a sharded index; variant files such as "
                                "*.fp16.* are not loaded).")

    in_channels, out_channels = transformer.get("in_channels"), transformer.get("out_channels")
    if index.get("expand_timesteps") or in_channels != 2 * (out_channels or 0) + 4:
        raise I2VModelError(f"{where}: its transformer takes {in_channels} input channels for {out_channels} "
                            "latent channels; WAN 2.1 image-to-video conditioning needs 2 × latent + 4 "
                            "(WAN 2.2 TI2V-5B, with its own VAE, is not supported).")
    if t2v_path:
        t2v = Path(t2v_path)
        checks = [("text_encoder", "d_model", "text_dim", "text encoder width"),
                  ("vae", "z_dim", "out_channels", "VAE latent channels")]
        for component, t2v_key, i2v_key, what in checks:
            config = t2v / component / "config.json"
            if not config.is_file():
                continue  # the text-to-video model's own check reports that
            expected = _read_json(config, f"WAN_MODEL_PATH={t2v}").get(t2v_key)
            if expected != transformer.get(i2v_key):
                raise I2VModelError(
                    f"{where}: does not fit the text-to-video model at WAN_MODEL_PATH={t2v}, whose "
                    f"{what} ({expected}) the I2V transformer would share but expects {transformer.get(i2v_key)}; "
                    "both must be WAN 2.1 models (same UMT5 text encoder and VAE).")
    return transformer


def default_dtype(device):
    """The dtypes `load_i2v` uses on `device`, as the text-to-video pipeline's (wan_tasks.pipeline._load):
    a bfloat16 transformer on CUDA, the VAE and the CLIP image encoder in float32 as in diffusers'
    WAN I2V examples; float32 throughout on CPU."""
    import torch

    if device.type == "cuda":
        return {"default": torch.bfloat16, "vae": torch.float32, "image_encoder": torch.float32}
    return torch.float32


def load_i2v(t2v_pipe, path, dtype=None):
    """The WanImageToVideoPipeline at `path` on `t2v_pipe`'s device, sharing its text encoder, tokenizer
    and VAE (the same module objects: no second copy in memory). Checks the folder first."""
    from diffusers import WanImageToVideoPipeline

    check_i2v_model(path)
    device = t2v_pipe.device
    pipe = WanImageToVideoPipeline.from_pretrained(
        str(path), local_files_only=True, dtype=default_dtype(device) if dtype is None else dtype,
        text_encoder=t2v_pipe.text_encoder, tokenizer=t2v_pipe.tokenizer, vae=t2v_pipe.vae,
    ).to(device)
    pipe.set_progress_bar_config(disable=True)
    return pipe


_cache = {}


def get_i2v(t2v_pipe, path):
    """load_i2v(t2v_pipe, path), once per process for a given text-to-video pipeline and path."""
    cached = _cache.get("loaded")
    if cached is None or cached[0] is not t2v_pipe or cached[1] != str(path):
        _cache.clear()  # drop a previous I2V pipeline (and its hold on an older T2V one) first
        _cache["loaded"] = (t2v_pipe, str(path), load_i2v(t2v_pipe, path))
    return _cache["loaded"][2]


def clear_cache():
    _cache.clear()


def reference_frame(job):
    """The job's reference as an RGB picture of exactly the job's size: read from storage, resized and
    center-cropped (never stretched), as the SDXL pool does. JobError if it was deleted meanwhile."""
    from PIL import ImageOps
    from PIL.Image import Resampling

    if job.reference_image is None:
        raise runtime.JobError("The reference image was deleted before the job ran.")
    picture = references.load_reference(job.reference_image)
    return ImageOps.fit(picture, (job.width, job.height), Resampling.LANCZOS)


def i2v_kwargs(job, reference, pipe=None):
    """What a WanImageToVideoPipeline call needs beyond the text-to-video call's arguments: the
    reference as the first frame. Everything else (prompt, size, frames, steps, guidance, generator,
    callback) is the same. Refuses what the pipeline would silently change: a size it would round
    down, a frame count it would round, a reference it would stretch."""
    if job.type.kind != "video":
        raise runtime.JobError(f"{job.job_type} does not take a reference image: only video types start "
                               "from one.")
    temporal, multiple = 4, 16  # WAN 2.1's VAE: 4× in time, 8× in space; patches of 2×2 latents
    if pipe is not None:
        temporal = pipe.vae_scale_factor_temporal
        multiple = pipe.vae_scale_factor_spatial * pipe.transformer.config.patch_size[1]
    if job.width % multiple or job.height % multiple:
        raise runtime.JobError(f"Width and height must be multiples of {multiple}; got {job.width}×{job.height}.")
    if job.frames % temporal != 1:
        raise runtime.JobError(f"A video from a reference needs {temporal}k+1 frames; got {job.frames}.")
    if reference.size != (job.width, job.height):
        raise runtime.JobError(f"The reference is {reference.size[0]}×{reference.size[1]}, not the job's "
                               f"{job.width}×{job.height}.")
    return {"image": reference}


def reference_metadata(job, reference, path):
    """What Job.metadata["reference"] records for an image-to-video render (as the SDXL pool's)."""
    # reference_strength is recorded as asked: WAN 2.1 I2V always starts from the reference itself.
    return {"id": job.reference_image_id, "type": job.reference_type, "reference_strength": job.reference_strength,
            "size": list(reference.size), "model": pipelines.model_name(path)}
