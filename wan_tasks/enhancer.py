"""The prompt enhancer: a causal language model that rewrites a short prompt into a detailed one.

Loaded once per worker process from settings.ENHANCER_MODEL_PATH, on the same device as WAN.
"""

import logging
import unicodedata
from functools import lru_cache
from pathlib import Path

import torch
from django.conf import settings
from transformers import AutoModelForCausalLM, AutoTokenizer

from generation import pipelines

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


def get_enhancer():
    """The (model, tokenizer) pair for the configured path, loaded on first use."""
    return _load(settings.ENHANCER_MODEL_PATH, pipelines.torch_device())


@lru_cache(maxsize=1)  # keyed by path so that a changed setting (tests) loads the new model
def _load(path, device):
    if not Path(path).is_dir():
        # transformers would read a missing folder as a hub repo id and say so, confusingly.
        raise FileNotFoundError(f"no prompt enhancer model at {path} (ENHANCER_MODEL_PATH)")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True, dtype=dtype).to(device)
    log.info("loaded prompt enhancer %s on %s (%s)", path, device, dtype)
    return model, tokenizer


def enhance(prompt):
    """The enhancer's rewrite of `prompt` (greedy, so the same prompt gives the same text)."""
    model, tokenizer = get_enhancer()
    messages = [{"role": "system", "content": INSTRUCTION}, {"role": "user", "content": prompt}]
    inputs = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt",
                                           return_dict=True).to(model.device)
    with torch.inference_mode():
        output = model.generate(**inputs, do_sample=False, max_new_tokens=settings.ENHANCER_MAX_NEW_TOKENS,
                                pad_token_id=tokenizer.pad_token_id)
    new_tokens = output[0, inputs["input_ids"].shape[1]:]
    text = tokenizer.decode(new_tokens, skip_special_tokens=True)
    # A model can emit control bytes; PostgreSQL text columns refuse NUL.
    text = "".join(ch for ch in text if ch in "\n\t" or unicodedata.category(ch) != "Cc").strip()
    if not text:
        raise EnhancementError(f"the enhancer returned no text for a prompt of {len(prompt)} characters")
    return text
