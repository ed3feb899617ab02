"""A tiny, randomly initialised SDXL pipeline for development and tests (no download needed).

The shapes are those of the diffusers test suite's tiny SDXL; the output is noise-like, but the
code path (two text encoders, CFG, VAE, schedulers, img2img) is the real one.

    python -m sdxl_tasks.devmodel PATH
"""

import sys

from generation.devmodels import build_atomically, word_level_tokenizer

BOS, EOS, UNK = "<|startoftext|>", "<|endoftext|>", "[UNK]"
WINDOW = 77  # CLIP's context length, as in the real SDXL tokenizers
VOCAB_SIZE = 1000  # the text encoders' embedding table; every token id must stay below it


def build_tokenizer():
    """A CLIP-sized word-level tokenizer wrapped for transformers; ids stay below VOCAB_SIZE."""
    tokenizer = word_level_tokenizer([BOS, EOS, UNK], f"{BOS} $A {EOS}", f"{BOS} $A {EOS} $B {EOS}",
                                     model_max_length=WINDOW, bos_token=BOS, eos_token=EOS, unk_token=UNK,
                                     pad_token=EOS)
    assert len(tokenizer) <= VOCAB_SIZE, len(tokenizer)
    return tokenizer


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
    return build_atomically(path, lambda folder: build_pipeline().save_pretrained(folder))


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m sdxl_tasks.devmodel PATH")
    print(f"tiny SDXL pipeline written to {build(sys.argv[1])}")
