import json

import pytest
from django.test import override_settings

from generation import negative_prompts
from generation.models import NegativeTerm
from generation.negative_prompts import multi_party_reasons

SEVERAL_PEOPLE = [
    "two women walking on a beach",
    "three men playing cards",
    "2 people sitting at a table",
    "4 friends at a party",
    "a woman and a man dancing",
    "a girl and a boy holding hands",
    "female and male athletes",  # plural, mixed
    "both of them laughing",
    "a couple at sunset",
    "a group of hikers",
    "friends together at a cafe",
    "people in a crowded market",
    "twin sisters in matching dresses",
    "the two of them in the rain",
    "Two Ladies drinking tea",
    "a man, a woman and their dog",
    "several young girls running",
    "a family picnic",
    "women in red dresses",
    "Men at work",
    "a bride and groom",
    "a two-person portrait",
]

ONE_PERSON = [
    "a woman in a red dress",  # "woman" contains "man"
    "portrait of a female astronaut",  # "female" contains "male"
    "a human with a sword",  # "human" contains "man"
    "Manhattan skyline at night",
    "a policewoman directing traffic",
    "a man with two swords",  # a count, but of swords
    "a woman holding three apples",
    "a mannequin in a shop window",
    "a snowman in the garden",
    "an old fisherman",
    "a wo-man ninja",
    "a girl reading",
    "a knight on a horse",
    "landscape with 2 mountains",
    "email from a salesman",
]


@pytest.mark.parametrize("prompt", SEVERAL_PEOPLE)
def test_detects_several_people(prompt):
    assert multi_party_reasons(prompt), prompt


@pytest.mark.parametrize("prompt", ONE_PERSON)
def test_single_subjects_are_not_groups(prompt):
    assert multi_party_reasons(prompt) == [], prompt


def test_reasons_name_the_rule():
    assert multi_party_reasons("a woman and a man") == ["mixed: woman+man"]
    assert multi_party_reasons("two women")[0] == "count: two women"


@pytest.mark.django_db
def test_build_includes_base_terms_and_group_terms_only_when_triggered():
    single = negative_prompts.build("a woman in a red dress")
    group = negative_prompts.build("two women in red dresses")
    assert "bad anatomy" in single.text and "watermark" in single.text and "child" in single.text
    assert "wrong number of people" not in single.text
    assert "wrong number of people" in group.text and "merged bodies" in group.text
    assert group.multi_party and not single.multi_party


@pytest.mark.django_db
def test_user_negative_is_appended_and_admin_edits_apply():
    watermark = NegativeTerm.objects.get(term="watermark")
    watermark.enabled = False
    watermark.save()  # as the admin saves it
    NegativeTerm.objects.create(term="blurry", category="quality", trigger="always", position=1)
    built = negative_prompts.build("a cat", "ugly, duplicate")
    assert built.text.startswith("blurry, ")
    assert "watermark" not in built.text
    assert built.text.endswith("ugly, duplicate")


@pytest.mark.django_db
def test_cut_to_the_token_window_by_the_pipeline_tokenizer():
    tokenizer, window = negative_prompts.sdxl_tokenizer()
    assert window == 77
    long_user_negative = ", ".join(f"extra term {i}" for i in range(60))
    built = negative_prompts.build("two women", long_user_negative)
    used = len(tokenizer.encode(built.text, add_special_tokens=False).ids)
    assert used <= window - 2
    assert built.dropped, "the overflow is recorded"
    # Whole terms are dropped from the end; the base and group terms survive.
    assert "bad anatomy" in built.text and "wrong number of people" in built.text
    assert all(term.strip() in long_user_negative for term in built.dropped)
    next_term = built.dropped[0]
    too_long = built.text + ", " + next_term
    assert len(tokenizer.encode(too_long, add_special_tokens=False).ids) > window - 2


def test_clip_bpe_from_slow_files_matches_transformers(tmp_path):
    """Real SDXL folders ship vocab.json + merges.txt only; our reader counts like transformers."""
    from transformers import CLIPTokenizer

    letters = "abcdefghijklmnopqrstuvwxyz"
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for ch in letters + ",.!'":
        vocab.setdefault(ch, len(vocab))
        vocab.setdefault(ch + "</w>", len(vocab))
    merges = ["b a", "ba d</w>", "h a", "ha n", "han d", "hand s</w>", "t e", "te x", "tex t</w>"]
    for merge in merges:
        vocab.setdefault(merge.replace(" ", ""), len(vocab))
    (tmp_path / "vocab.json").write_text(json.dumps(vocab))
    (tmp_path / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"model_max_length": 77}))
    reference = CLIPTokenizer.from_pretrained(str(tmp_path))  # as diffusers loads a real SDXL folder
    ours, window = negative_prompts.load_tokenizer(str(tmp_path))
    for text in ["bad hands, text", "Bad   HANDS!!", "hands, bad, text, watermark's"]:
        expected = reference(text, add_special_tokens=False)["input_ids"]
        assert ours.encode(text, add_special_tokens=False).ids == expected, text
    assert window == 77


@pytest.mark.django_db
def test_missing_tokenizer_is_a_clear_error(tmp_path):
    with override_settings(SDXL_TOKENIZER_PATH=str(tmp_path)):
        with pytest.raises(negative_prompts.TokenizerUnavailable, match="SDXL_TOKENIZER_PATH") as raised:
            negative_prompts.build("a cat")
    assert raised.value.cause.startswith(f"FileNotFoundError: No SDXL tokenizer at {tmp_path}")  # for the operator
