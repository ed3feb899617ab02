"""The prompt enhancer: a causal language model that rewrites a short prompt into a detailed one.

Loaded once per worker process from settings.ENHANCER_MODEL_PATH. It shares the WAN worker's GPU:
resident when both fit, or kept on the CPU and brought over for each rewrite (`place`).
"""

import logging
import unicodedata
from dataclasses import dataclass
from pathlib import Path

import torch
from django.conf import settings
from transformers import AutoModelForCausalLM, AutoTokenizer

from generation.worker import pipelines

log = logging.getLogger(__name__)

# The one instruction every enhancement uses.
INSTRUCTION = (
    "You rewrite short prompts for an AI video and image generator. Expand the user's prompt into "
    "one detailed, vivid description of the scene: subject, appearance, action, setting, lighting, "
    "camera and style. Keep the user's intent and every element they asked for. Reply with the "
    "rewritten prompt only, with no preamble, notes or quotes."
)

class EnhancementError(Exception):
    """The enhancer gave no usable prompt."""


def model_name():
    """A short name of the configured enhancer, for job metadata."""
    return Path(settings.ENHANCER_MODEL_PATH).name


@dataclass
class Enhancer:
    """The loaded model and tokenizer, and where the model runs: resident on `device`, or kept on the
    CPU between rewrites when `offload` (see `place`)."""

    model: object
    tokenizer: object
    device: object = None  # None until placed: the worker's device
    offload: bool = False


def get_enhancer():
    """The Enhancer for the configured path, loaded on first use in this process."""
    key = (settings.ENHANCER_MODEL_PATH, pipelines.torch_device())
    return pipelines.load_once("enhancer", key, lambda: _load(*key))


def _load(path, device):
    if not Path(path).is_dir():
        # transformers would read a missing folder as a hub repo id and say so, confusingly.
        raise FileNotFoundError(f"no prompt enhancer model at {path} (ENHANCER_MODEL_PATH)")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    # Loaded on the CPU; `place` (or the first rewrite) puts it where it runs.
    model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True, dtype=dtype)
    log.info("loaded prompt enhancer %s (%s)", path, dtype)
    return Enhancer(model, tokenizer)


def size_bytes(module):
    """Bytes of a model's weights."""
    return sum(p.numel() * p.element_size() for p in module.parameters())


def should_offload(setting, device, total_bytes, wan_bytes, enhancer_bytes, reserve_bytes):
    """Whether the enhancer lives on the CPU between uses: forced by `setting`, or because WAN, the
    enhancer and the working memory WAN needs to render do not fit on the GPU together."""
    if setting in ("always", "never"):
        return setting == "always"
    if device.type != "cuda":
        return False
    return wan_bytes + enhancer_bytes + reserve_bytes > total_bytes


def place(device, offload):
    """Keep the enhancer on `device`, or on the CPU between rewrites when `offload`."""
    loaded = get_enhancer()
    loaded.model.to("cpu" if offload else device)
    loaded.device, loaded.offload = device, offload
    log.info("prompt enhancer %s", "offloaded to the CPU between uses" if offload else f"resident on {device}")


def enhance(prompt):
    """The enhancer's rewrite of `prompt` (greedy, so the same prompt gives the same text)."""
    loaded = get_enhancer()
    model, tokenizer = loaded.model, loaded.tokenizer
    device = loaded.device or pipelines.torch_device()
    model.to(device)  # a no-op when resident
    try:
        messages = [{"role": "system", "content": INSTRUCTION}, {"role": "user", "content": prompt}]
        inputs = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt",
                                               return_dict=True).to(device)
        with torch.inference_mode():
            output = model.generate(**inputs, do_sample=False, max_new_tokens=settings.ENHANCER_MAX_NEW_TOKENS,
                                    pad_token_id=tokenizer.pad_token_id)
    finally:
        if loaded.offload:
            model.to("cpu")
            pipelines.free_memory()
    new_tokens = output[0, inputs["input_ids"].shape[1]:]
    text = tokenizer.decode(new_tokens, skip_special_tokens=True)
    # A model can emit control bytes; PostgreSQL text columns refuse NUL.
    text = "".join(ch for ch in text if ch in "\n\t" or unicodedata.category(ch) != "Cc").strip()
    if not text:
        raise EnhancementError(f"the enhancer returned no text for a prompt of {len(prompt)} characters")
    return text
