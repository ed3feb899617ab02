"""Image-to-video for the WAN pool: a video job with a reference image starts from that picture.

    WAN_I2V_MODEL_PATH=/models/Wan2.1-I2V-14B-480P-Diffusers   # a WanImageToVideoPipeline folder

The WAN 2.1 image-to-video and text-to-video models share the UMT5 text encoder, its tokenizer and
the VAE, so `load_i2v` takes those from the loaded text-to-video pipeline (no second copy in memory)
and loads only what is the I2V model's own: its transformer, the CLIP image encoder and processor
and its scheduler settings. `check_i2v_model` validates a folder from file names, JSON and safetensors
headers (no weights read), so a worker can refuse to start with a message naming the variable.
"""

from pathlib import Path

from generation.worker import model_folders, pipelines, runtime
from generation.worker.model_folders import ModelConfigError

MODEL_VAR = "WAN_I2V_MODEL_PATH"
PIPELINE_CLASS = "WanImageToVideoPipeline"
EXAMPLE = "Wan-AI/Wan2.1-I2V-14B-480P-Diffusers"
LAYOUT = "a WAN 2.1 image-to-video pipeline has transformer, image_encoder, image_processor and scheduler folders"


def check_i2v_model(path, t2v_path=None):
    """Raise ModelConfigError unless `path` is a WanImageToVideoPipeline folder this worker can load
    beside the text-to-video model at `t2v_path` (when given: same text-encoder width and VAE
    latent channels). Reads no weights. Returns the I2V transformer's config."""
    if not path:
        raise ModelConfigError(f"{MODEL_VAR} is empty: set it to a WAN image-to-video diffusers folder "
                               f"(e.g. {EXAMPLE}).")
    folder = Path(path)
    where = f"{MODEL_VAR}={folder}"
    index = model_folders.pipeline_index(
        folder, MODEL_VAR, {PIPELINE_CLASS}, expected=f"a {PIPELINE_CLASS} (an image-to-video model such as {EXAMPLE})",
        hints={"WanPipeline": "a text-to-video model: that is WAN_MODEL_PATH's kind"})
    listed = model_folders.listed_components(index)
    if "transformer" not in listed:
        raise ModelConfigError(f"{where}: model_index.json lists no transformer.")
    transformer_config = folder / "transformer" / "config.json"
    transformer = model_folders.read_json(transformer_config, where) if transformer_config.is_file() else {}
    required = ["transformer", "scheduler"]
    if "transformer_2" in listed:
        required.append("transformer_2")  # WAN 2.2 A14B: a second, low-noise transformer
    if transformer.get("image_dim") is not None:
        required += ["image_encoder", "image_processor"]  # WAN 2.1: CLIP image tokens
    model_folders.check_components(folder, MODEL_VAR, index, required, layout=LAYOUT)

    in_channels, out_channels = transformer.get("in_channels"), transformer.get("out_channels")
    if index.get("expand_timesteps") or in_channels != 2 * (out_channels or 0) + 4:
        raise ModelConfigError(f"{where}: its transformer takes {in_channels} input channels for {out_channels} "
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
            expected = model_folders.read_json(config, f"WAN_MODEL_PATH={t2v}").get(t2v_key)
            if expected != transformer.get(i2v_key):
                raise ModelConfigError(
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


def get_i2v(t2v_pipe, path):
    """load_i2v(t2v_pipe, path), once per process for a given text-to-video pipeline and path."""
    return pipelines.load_once("wan-i2v", (t2v_pipe, str(path)), lambda: load_i2v(t2v_pipe, path))


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
