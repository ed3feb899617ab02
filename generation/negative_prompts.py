"""The SDXL negative prompt: admin-edited terms, multi-party detection, and the 77-token window."""

import json
import re
import time
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from django.conf import settings

from .models import NegativeTerm

NUMBER_WORDS = {"two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "several",
                "multiple", "many", "pair", "trio", "duo"}
PERSON_WORDS = {
    "person", "persons", "people", "woman", "women", "man", "men", "girl", "girls", "boy", "boys",
    "lady", "ladies", "guy", "guys", "female", "females", "male", "males", "friend", "friends",
    "adult", "adults", "figure", "figures", "character", "characters", "model", "models",
    "sister", "sisters", "brother", "brothers", "twin", "twins", "lover", "lovers", "partner",
    "partners", "couple", "couples", "wife", "husband", "bride", "groom",
}
PLURAL_PEOPLE = {"people", "persons", "women", "men", "girls", "boys", "ladies", "guys", "females",
                 "males", "friends", "adults", "sisters", "brothers", "twins", "lovers", "partners",
                 "couples", "characters", "crowd", "family", "threesome"}
GROUP_WORDS = {"both", "couple", "group", "together"}
FEMALE_WORDS = {"woman", "girl", "lady", "female", "wife", "bride"}
MALE_WORDS = {"man", "boy", "guy", "male", "husband", "groom"}

WORD_RE = re.compile(r"[a-z0-9]+")


def multi_party_reasons(prompt):
    """Why `prompt` describes several people (an empty list when it does not). Whole words only."""
    words = WORD_RE.findall(prompt.lower())
    found = set(words)
    reasons = []
    for i, word in enumerate(words):
        is_count = word in NUMBER_WORDS or (word.isdigit() and int(word) >= 2)
        following = words[i + 1:i + 4]
        if is_count and (any(w in PERSON_WORDS for w in following) or following[:2] in (["of", "them"],
                                                                                        ["of", "us"])):
            reasons.append(f"count: {' '.join(words[i:i + 3])}")
            break
    reasons += [f"word: {w}" for w in sorted(found & GROUP_WORDS)]
    reasons += [f"plural: {w}" for w in sorted(found & PLURAL_PEOPLE)]
    if found & FEMALE_WORDS and found & MALE_WORDS:
        reasons.append("mixed: " + "+".join(sorted(found & FEMALE_WORDS) + sorted(found & MALE_WORDS)))
    return reasons


@dataclass
class NegativePrompt:
    text: str
    multi_party: list = field(default_factory=list)  # reasons the group terms were added
    dropped: list = field(default_factory=list)  # terms cut to fit the token window


def for_job(job_type, prompt, user_negative=""):
    """The negative prompt a job of `job_type` runs with: SDXL's generated one, else only the user's own
    (submission stores it, the Workspace previews it)."""
    if job_type.pool != "sdxl":
        return NegativePrompt(user_negative)
    return build(prompt, user_negative)


def build(prompt, user_negative=""):
    """The SDXL negative prompt for `prompt`: base terms, group terms if triggered, the user's own."""
    reasons = multi_party_reasons(prompt)
    by_trigger = enabled_terms()
    terms = by_trigger[NegativeTerm.Trigger.ALWAYS] + (by_trigger[NegativeTerm.Trigger.MULTI_PARTY] if reasons else [])
    terms += [t.strip() for t in user_negative.split(",") if t.strip()]
    terms = list(dict.fromkeys(terms))  # drop repeats, keep order
    kept, dropped = fit_to_window(terms)
    return NegativePrompt(", ".join(kept), reasons, dropped)


# Every submission needs the terms; admins rarely edit them. A web process re-reads them at most
# this often (seconds), and at once after an edit made in the same process.
TERMS_TTL = 10
_terms = {"expires": 0.0, "by_trigger": None}


def enabled_terms():
    """Enabled terms by trigger, in prompt order, cached for TERMS_TTL seconds."""
    if _terms["by_trigger"] is None or time.monotonic() > _terms["expires"]:
        by_trigger = {trigger: [] for trigger in NegativeTerm.Trigger.values}
        for trigger, term in NegativeTerm.objects.filter(enabled=True).order_by("position", "id").values_list(
                "trigger", "term"):
            by_trigger[trigger].append(term)
        _terms.update(by_trigger=by_trigger, expires=time.monotonic() + TERMS_TTL)
    return _terms["by_trigger"]


def forget_terms(**kwargs):
    """Drop the cached terms (connected to NegativeTerm saves and deletes)."""
    _terms["by_trigger"] = None


def fit_to_window(terms):
    """Split terms into those that fit the text encoder's window, counted by its tokenizer, and the rest."""
    tokenizer, window = sdxl_tokenizer()
    budget = window - 2  # the window includes the start and end tokens
    if len(tokenizer.encode(", ".join(terms), add_special_tokens=False).ids) <= budget:
        return terms, []  # the usual case: everything fits
    kept = []
    for i, term in enumerate(terms):
        candidate = ", ".join(kept + [term])
        if len(tokenizer.encode(candidate, add_special_tokens=False).ids) > budget:
            return kept, terms[i:]
        kept.append(term)
    return kept, []


class TokenizerUnavailable(Exception):
    """This host cannot read the SDXL tokenizer, so it cannot prepare SDXL jobs (the API answers 503)."""

    def __init__(self, cause):
        super().__init__("This server cannot prepare SDXL jobs now: its SDXL tokenizer (SDXL_TOKENIZER_PATH) is "
                         "missing or unreadable. Try again later.")
        self.cause = cause


def sdxl_tokenizer():
    """The SDXL pipeline's (first) tokenizer and its window, loaded without transformers;
    TokenizerUnavailable when it cannot be read."""
    try:
        return load_tokenizer(settings.SDXL_TOKENIZER_PATH)
    except Exception as exc:
        raise TokenizerUnavailable(f"{type(exc).__name__}: {exc}") from exc


@lru_cache(maxsize=4)
def load_tokenizer(path):
    """A `tokenizers.Tokenizer` from tokenizer.json, or a CLIP BPE from vocab.json + merges.txt."""
    from tokenizers import Tokenizer

    path = Path(path)
    config_file = path / "tokenizer_config.json"
    config = json.loads(config_file.read_text()) if config_file.exists() else {}
    window = int(config.get("model_max_length") or 77)
    window = min(window, 77)  # "infinite" sentinels in some configs
    if (path / "tokenizer.json").exists():
        return Tokenizer.from_file(str(path / "tokenizer.json")), window
    if (path / "vocab.json").exists() and (path / "merges.txt").exists():
        return _clip_bpe(path), window
    raise FileNotFoundError(f"No SDXL tokenizer at {path} (expected tokenizer.json, or vocab.json and "
                            "merges.txt); set SDXL_TOKENIZER_PATH or run `manage.py setup`.")


def _clip_bpe(path):
    """CLIP's byte-level BPE as transformers' CLIPTokenizerFast builds it from the slow files."""
    from tokenizers import Regex, Tokenizer, decoders, normalizers, pre_tokenizers
    from tokenizers.models import BPE

    model = BPE.from_file(str(path / "vocab.json"), str(path / "merges.txt"),
                          continuing_subword_prefix="", end_of_word_suffix="</w>",
                          unk_token="<|endoftext|>", fuse_unk=False)
    tokenizer = Tokenizer(model)
    tokenizer.normalizer = normalizers.Sequence(
        [normalizers.NFC(), normalizers.Replace(Regex(r"\s+"), " "), normalizers.Lowercase()]
    )
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(r"'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"),
                             behavior="removed", invert=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False),
    ])
    tokenizer.decoder = decoders.ByteLevel()
    return tokenizer
