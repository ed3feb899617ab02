"""A tiny, randomly initialised SDXL pipeline for development and tests (no download needed).

The shapes are those of the diffusers test suite's tiny SDXL; the output is noise-like, but the
code path (two text encoders, CFG, VAE, schedulers, img2img) is the real one.

    python -m sdxl_tasks.devmodel PATH
"""

import importlib
import shutil
import sys
import tempfile
from pathlib import Path

BOS, EOS, UNK = "<|startoftext|>", "<|endoftext|>", "[UNK]"
WINDOW = 77  # CLIP's context length, as in the real SDXL tokenizers
VOCAB_SIZE = 1000  # the text encoders' embedding table; every token id must stay below it

COMMON_WORDS = """
a an the and or but of in on at to from with without by for as is are was were be been being it its
this that these those there here he she they we you i me my your his her their our them us who what
which where when why how all any both each every few more most other some such no not only own same so
than too very can will just should now up down out over under again once off into through during
before after above below between behind beside near far inside outside around across along
one two three four five six seven eight nine ten first second third many several single pair group
man men woman women person people girl girls boy boys child lady ladies guy guys friend friends
couple family crowd figure character portrait face eyes eye hair hand hands arm arms leg legs body
head mouth nose smile lips skin fingers feet
red orange yellow green blue purple pink brown black white gray grey gold silver dark light bright
colorful pale warm cold soft hard sharp smooth rough shiny glowing neon pastel vivid
big small large tiny tall short long wide old young new ancient modern beautiful pretty cute ugly
happy sad calm angry serious elegant simple detailed realistic cinematic dramatic epic
photo photograph picture painting drawing sketch illustration render art artwork style oil watercolor
digital anime cartoon comic studio lighting light shadow shadows sunlight moonlight sunset sunrise
night day morning evening sky cloud clouds sun moon star stars rain snow fog mist storm wind
city street road house home room window door wall floor table chair bed kitchen garden park forest
tree trees flower flowers grass field mountain mountains hill river lake sea ocean beach water sand
rock stone desert island bridge tower castle church building car train boat ship plane bike
dog dogs cat cats bird birds horse fish animal animals dragon robot
wearing dress shirt coat jacket hat glasses shoes
standing sitting walking running lying looking holding smiling flying swimming dancing playing
reading eating sleeping
background foreground scene view close closeup full shot angle wide lens camera focus depth field
bokeh blur blurry high quality best masterpiece resolution hd 4k 8k ultra highly intricate sharp
texture pattern color colors tone mood atmosphere
""".split()

PUNCTUATION = list(",.;:!?'\"()[]{}-_/&+*#%=<>|@~`$^\\")


def negative_words():
    """Every word of the seeded negative-prompt terms, so the default negative prompt has no [UNK]."""
    seed = importlib.import_module("generation.migrations.0002_seed_negative_terms")
    terms = [t for terms in seed.ALWAYS.values() for t in terms] + seed.MULTI_PARTY
    return [word for term in terms for word in term.lower().split()]


def build_tokenizer():
    """A CLIP-sized word-level tokenizer wrapped for transformers; ids stay below VOCAB_SIZE."""
    from tokenizers import Tokenizer, normalizers, pre_tokenizers, processors
    from tokenizers.models import WordLevel
    from transformers import PreTrainedTokenizerFast

    words = [BOS, EOS, UNK] + list(dict.fromkeys(COMMON_WORDS + negative_words() + PUNCTUATION))
    assert len(words) <= VOCAB_SIZE, len(words)
    vocab = {word: i for i, word in enumerate(words)}
    tokenizer = Tokenizer(WordLevel(vocab, unk_token=UNK))
    tokenizer.normalizer = normalizers.Lowercase()
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation(behavior="isolated")]
    )
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A {EOS}", pair=f"{BOS} $A {EOS} $B {EOS}",
        special_tokens=[(BOS, vocab[BOS]), (EOS, vocab[EOS])],
    )
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, model_max_length=WINDOW, bos_token=BOS,
                                   eos_token=EOS, unk_token=UNK, pad_token=EOS)


def build_pipeline():
    """The tiny StableDiffusionXLPipeline, identical on every call."""
    import torch
    from diffusers import (
        AutoencoderKL,
        EulerDiscreteScheduler,
        StableDiffusionXLPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64), layers_per_block=2, sample_size=32, in_channels=4, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4), use_linear_projection=True, addition_embed_type="text_time",
        addition_time_embed_dim=8, transformer_layers_per_block=(1, 2),
        projection_class_embeddings_input_dim=80,  # 6 time ids × 8 + pooled text 32
        cross_attention_dim=64,  # the two encoders' hidden states concatenated: 32 + 32
    )
    scheduler = EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, steps_offset=1,
                                       beta_schedule="scaled_linear", timestep_spacing="leading")
    torch.manual_seed(0)
    vae = AutoencoderKL(
        block_out_channels=[32, 64], in_channels=3, out_channels=3,
        down_block_types=["DownEncoderBlock2D", "DownEncoderBlock2D"],
        up_block_types=["UpDecoderBlock2D", "UpDecoderBlock2D"], latent_channels=4, sample_size=128,
    )
    tokenizer = build_tokenizer()
    # eos must not be 2: CLIP treats eos_token_id == 2 as a legacy config and pools at the largest id.
    text_config = CLIPTextConfig(
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, hidden_size=32, intermediate_size=37, layer_norm_eps=1e-05,
        num_attention_heads=4, num_hidden_layers=5, vocab_size=VOCAB_SIZE, hidden_act="gelu",
        projection_dim=32, max_position_embeddings=WINDOW,
    )
    torch.manual_seed(0)
    text_encoder = CLIPTextModel(text_config)
    torch.manual_seed(0)
    text_encoder_2 = CLIPTextModelWithProjection(text_config)
    return StableDiffusionXLPipeline(
        vae=vae, text_encoder=text_encoder, text_encoder_2=text_encoder_2, tokenizer=tokenizer,
        tokenizer_2=tokenizer, unet=unet, scheduler=scheduler, add_watermarker=False,
    )


def build(path):
    """Build the tiny pipeline and save it at `path` (replacing what is there); returns the Path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Built beside the target and renamed in, so a reader never sees half a model.
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        build_pipeline().save_pretrained(tmp)
        if path.exists():
            old = path.with_name(f".{path.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            path.rename(old)
            tmp.rename(path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m sdxl_tasks.devmodel PATH")
    print(f"tiny SDXL pipeline written to {build(sys.argv[1])}")
