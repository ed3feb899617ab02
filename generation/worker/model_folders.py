"""The one check of a diffusers pipeline folder, for every model path a pool loads.

Reads file names, JSON and safetensors headers only (no weights, no torch), so a worker's main
process can call it before it forks and refuse to start with a message that names the variable.
"""

import json
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

WEIGHT_FILES = [f"{stem}{ext}" for stem in ("diffusion_pytorch_model", "model", "pytorch_model")
                for ext in (".safetensors", ".bin", ".safetensors.index.json", ".bin.index.json")]
# Each component's own configuration file, where it is not config.json; tokenizers are not checked.
CONFIG_FILES = {"scheduler": "scheduler_config.json", "image_processor": "preprocessor_config.json",
                "feature_extractor": "preprocessor_config.json"}
TOKENIZERS = {"tokenizer", "tokenizer_2"}
WITHOUT_WEIGHTS = {"scheduler", "image_processor", "feature_extractor"} | TOKENIZERS


class ModelConfigError(ImproperlyConfigured):
    """A model path that cannot work; the message starts with the variable and its value."""


def read_json(path, where):
    """The JSON object in `path`; ModelConfigError starting with `where` if it is not one."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise ModelConfigError(f"{where}: {Path(path).name} cannot be read: {exc}") from exc
    if not isinstance(data, dict):
        raise ModelConfigError(f"{where}: {Path(path).name} is not a JSON object.")
    return data


def pipeline_index(path, variable, classes, expected=None, hints=None):
    """model_index.json of the pipeline folder `path` (set by `variable`), which must describe one of
    `classes`; `expected` words what was wanted and `hints` explain a known wrong class."""
    if not path:
        raise ModelConfigError(f"{variable} is empty: set it to a diffusers pipeline folder.")
    folder = Path(path)
    where = f"{variable}={folder}"
    if not folder.is_dir():
        raise ModelConfigError(f"{where}: no such folder.")
    if not (folder / "model_index.json").is_file():
        raise ModelConfigError(f"{where}: not a diffusers pipeline folder (no model_index.json).")
    index = read_json(folder / "model_index.json", where)
    name = index.get("_class_name")
    if name not in classes:
        hint = f" ({hints[name]})" if name in (hints or {}) else ""
        raise ModelConfigError(f"{where}: model_index.json describes {name!r}{hint}, not "
                               f"{expected or ' or '.join(sorted(classes))}.")
    return index


def listed_components(index):
    """The components model_index.json lists with a class (a refiner lists text_encoder as null)."""
    return [name for name, value in index.items()
            if not name.startswith("_") and isinstance(value, list) and value and value[0]]


def check_components(path, variable, index, components, weights=True, layout=""):
    """Each of `components` is listed in `index` and has its folder with its configuration file and,
    when `weights`, its weights (a truncated .safetensors shows in its header). `layout` tells the
    user what a complete pipeline has."""
    folder = Path(path)
    where = f"{variable}={folder}"
    listed = listed_components(index)
    missing = [c for c in components if c not in listed or not (folder / c).is_dir()]
    if missing:
        raise ModelConfigError(f"{where}: no {', '.join(missing)}" + (f" ({layout})." if layout else "."))
    for component in components:
        names = {p.name for p in (folder / component).iterdir()}
        config_file = CONFIG_FILES.get(component, "config.json")
        if component not in TOKENIZERS and config_file not in names:
            raise ModelConfigError(f"{where}: {component}/{config_file} is missing.")
        if not weights or component in WITHOUT_WEIGHTS:
            continue
        found = names & set(WEIGHT_FILES)
        if not found:
            raise ModelConfigError(f"{where}: no weights in {component}/ (expected one of "
                                   f"{', '.join(WEIGHT_FILES[:2])} or a sharded index; variant files such as "
                                   "*.fp16.* are not loaded).")
        for name in sorted(found):
            if name.endswith(".safetensors"):
                safetensors_keys(folder / component / name, f"{where}: {component}/{name}")


def check_folder(path, variable, classes, **kwargs):
    """pipeline_index then check_components for every component the folder lists; returns the index."""
    index = pipeline_index(path, variable, classes, **kwargs)
    check_components(path, variable, index, listed_components(index))
    return index


def safetensors_keys(path, where):
    """The tensor names in a .safetensors file, from its header alone; `where` starts the error."""
    from safetensors import safe_open

    try:
        with safe_open(path, framework="np") as checkpoint:  # parses the header; reads no tensor
            return list(checkpoint.keys())
    except Exception as exc:  # safetensors raises its own error types for a bad header
        raise ModelConfigError(f"{where}: not a readable .safetensors file ({exc}).") from exc
