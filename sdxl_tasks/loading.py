"""Where the SDXL pool's weights come from: a diffusers folder or one original-format .safetensors file.

    SDXL_MODEL_PATH=/models/stable-diffusion-xl-base-1.0            # a diffusers folder, or
    SDXL_MODEL_PATH=/models/sd_xl_base_1.0.safetensors              # one checkpoint file, with
    SDXL_CONFIG_PATH=/models/stable-diffusion-xl-base-1.0           # its configs and tokenizers

`check_model` validates the configuration from file names, JSON and the safetensors header only:
no weights are read, torch and CUDA are not touched, so a worker can call it in its main process
before forking and refuse to start with a clear message. `load_pipeline` loads, without network.
"""

from pathlib import Path

from generation.worker import model_folders
from generation.worker.model_folders import ModelConfigError

MODEL_VAR, CONFIG_VAR = "SDXL_MODEL_PATH", "SDXL_CONFIG_PATH"
SDXL_PIPELINES = {"StableDiffusionXLPipeline", "StableDiffusionXLImg2ImgPipeline"}
# The pipeline components StableDiffusionXLPipeline needs (an SDXL refiner has no first text encoder).
COMPONENTS = ("unet", "vae", "text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2", "scheduler")
# What an original-format (SGM) SDXL base checkpoint holds, by key prefix.
CHECKPOINT_PARTS = {
    "model.diffusion_model.": "the UNet",
    "first_stage_model.": "the VAE",
    "conditioner.embedders.0.transformer.": "the first text encoder (CLIP ViT-L)",
    "conditioner.embedders.1.model.": "the second text encoder (OpenCLIP ViT-bigG)",
}
LOOKS_LIKE = {  # a prefix found in other checkpoints → what the file probably is
    "cond_stage_model.": "a Stable Diffusion 1.x/2.x checkpoint",
    "conditioner.embedders.0.model.": "an SDXL refiner checkpoint",
    "down_blocks.": "a single diffusers-format component, not a whole pipeline",
}


def check_model(path, config_path=None):
    """Raise ModelConfigError unless `path` (and, for a single file, `config_path`) can be loaded.

    Returns "folder" or "single_file". Reads no weights (safetensors header keys only).
    """
    if not path:
        raise ModelConfigError(f"{MODEL_VAR} is empty: set it to an SDXL diffusers folder or .safetensors file.")
    path = Path(path)
    if not path.exists():
        raise ModelConfigError(f"{MODEL_VAR}={path}: no such file or folder.")
    if path.is_dir():
        _check_folder(path, MODEL_VAR, weights=True)
        return "folder"
    if path.suffix != ".safetensors":
        raise ModelConfigError(f"{MODEL_VAR}={path}: a single-file checkpoint must be a .safetensors file "
                               "(pickled .ckpt files can run code when loaded; convert it first).")
    _check_checkpoint(path)
    if not config_path:
        raise ModelConfigError(
            f"{MODEL_VAR}={path} is a single-file checkpoint; set {CONFIG_VAR} to a local SDXL diffusers "
            "folder holding its configs and tokenizers (e.g. stabilityai/stable-diffusion-xl-base-1.0; its "
            "weights are not needed), since nothing is downloaded.")
    config_path = Path(config_path)
    if not config_path.is_dir():
        raise ModelConfigError(f"{CONFIG_VAR}={config_path}: no such folder.")
    _check_folder(config_path, CONFIG_VAR, weights=False)
    return "single_file"


def _check_folder(folder, var, weights):
    index = model_folders.pipeline_index(folder, var, SDXL_PIPELINES,
                                         expected=f"an SDXL pipeline ({' or '.join(sorted(SDXL_PIPELINES))})")
    model_folders.check_components(folder, var, index, COMPONENTS, weights=weights,
                                   layout=f"an SDXL base pipeline has {', '.join(COMPONENTS)}; a refiner has no "
                                          "first text encoder")


def _check_checkpoint(path):
    keys = model_folders.safetensors_keys(path, f"{MODEL_VAR}={path}")
    missing = [what for prefix, what in CHECKPOINT_PARTS.items() if not any(k.startswith(prefix) for k in keys)]
    if missing:
        guess = next((what for prefix, what in LOOKS_LIKE.items() if any(k.startswith(prefix) for k in keys)), None)
        raise ModelConfigError(f"{MODEL_VAR}={path}: not an SDXL base checkpoint in the original single-file "
                               f"format: no weights for {', '.join(missing)}"
                               + (f"; it looks like {guess}." if guess else "."))


def load_pipeline(path, config_path=None, dtype=None):
    """The StableDiffusionXLPipeline at `path`, from local files only (check_model first)."""
    from diffusers import StableDiffusionXLPipeline

    if check_model(path, config_path) == "folder":
        return StableDiffusionXLPipeline.from_pretrained(str(path), dtype=dtype, local_files_only=True)
    # `config` points from_single_file at the local folder for every component's config and for the
    # tokenizers and scheduler; with local_files_only it never asks the Hub.
    return StableDiffusionXLPipeline.from_single_file(str(path), config=str(config_path), dtype=dtype,
                                                      local_files_only=True)
