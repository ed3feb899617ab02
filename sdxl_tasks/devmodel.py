"""A tiny, randomly initialised SDXL pipeline for development and tests (no download needed).

The shapes are those of the diffusers test suite's tiny SDXL; the output is noise-like, but the
code path (two text encoders, CFG, VAE, schedulers, img2img) is the real one.

    python -m sdxl_tasks.devmodel PATH                      # a diffusers folder
    python -m sdxl_tasks.devmodel PATH --single-file FILE   # and the same model as one .safetensors
"""

import json
import os
from pathlib import Path

from generation.worker.devmodels import build_atomically, word_level, word_level_tokenizer

BOS, EOS, UNK = "<|startoftext|>", "<|endoftext|>", "[UNK]"
TEMPLATES = ([BOS, EOS, UNK], f"{BOS} $A {EOS}", f"{BOS} $A {EOS} $B {EOS}")  # the tokenizer's specials, single, pair
WINDOW = 77  # CLIP's context length, as in the real SDXL tokenizers
VOCAB_SIZE = 1000  # the text encoders' embedding table; every token id must stay below it
# The text encoders' widths differ, as in SDXL (768 and 1280): diffusers' from_single_file tells a
# checkpoint's two encoders apart by width, so equal widths would load encoder 1 in place of encoder 2.
WIDTH_1, WIDTH_2 = 32, 64


def build_tokenizer():
    """A CLIP-sized word-level tokenizer wrapped for transformers; ids stay below VOCAB_SIZE."""
    tokenizer = word_level_tokenizer(*TEMPLATES, model_max_length=WINDOW, bos_token=BOS, eos_token=EOS,
                                     unk_token=UNK, pad_token=EOS)
    assert len(tokenizer) <= VOCAB_SIZE, len(tokenizer)
    return tokenizer


def write_tokenizer(path):
    """Only what the web tier reads of the tiny model's tokenizer (generation.negative_prompts.load_tokenizer):
    the same tokenizer.json, and a tokenizer_config.json giving the window. Written without transformers."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    word_level(*TEMPLATES, unk_token=UNK).save(str(path / "tokenizer.json"))
    (path / "tokenizer_config.json").write_text(json.dumps({"model_max_length": WINDOW}))
    return path


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
        projection_class_embeddings_input_dim=6 * 8 + WIDTH_2,  # 6 time ids × 8 + the pooled text
        cross_attention_dim=WIDTH_1 + WIDTH_2,  # the two encoders' hidden states concatenated
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
    def text_config(width):
        return CLIPTextConfig(
            bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id, hidden_size=width, intermediate_size=37,
            layer_norm_eps=1e-05, num_attention_heads=4, num_hidden_layers=5, vocab_size=VOCAB_SIZE,
            hidden_act="gelu", projection_dim=width, max_position_embeddings=WINDOW,
        )

    torch.manual_seed(0)
    text_encoder = CLIPTextModel(text_config(WIDTH_1))
    torch.manual_seed(0)
    text_encoder_2 = CLIPTextModelWithProjection(text_config(WIDTH_2))
    return StableDiffusionXLPipeline(
        vae=vae, text_encoder=text_encoder, text_encoder_2=text_encoder_2, tokenizer=tokenizer,
        tokenizer_2=tokenizer, unet=unet, scheduler=scheduler, add_watermarker=False,
    )


def build(path):
    """Build the tiny pipeline and save it at `path` (replacing what is there); returns the Path."""
    return build_atomically(path, lambda folder: build_pipeline().save_pretrained(folder))


# diffusers → original (SGM) key names, the inverse of diffusers' single_file_utils (the logic of
# diffusers' scripts/convert_diffusers_to_original_sdxl.py, generalised to any block count).
UNET_RESNET = {"norm1": "in_layers.0", "conv1": "in_layers.2", "norm2": "out_layers.0",
               "conv2": "out_layers.3", "time_emb_proj": "emb_layers.1", "conv_shortcut": "skip_connection"}
VAE_RESNET = {"conv_shortcut": "nin_shortcut"}
VAE_ATTENTION = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}
OPENCLIP_LAYER = {"layer_norm1": "ln_1", "layer_norm2": "ln_2", "mlp.fc1": "mlp.c_fc", "mlp.fc2": "mlp.c_proj",
                  "self_attn.out_proj": "attn.out_proj"}


def _unet_prefixes(config):
    """(diffusers prefix, original prefix) pairs of an SDXL-style UNet2DConditionModel."""
    n = config["layers_per_block"]
    pairs = [("time_embedding.linear_1.", "time_embed.0."), ("time_embedding.linear_2.", "time_embed.2."),
             ("add_embedding.linear_1.", "label_emb.0.0."), ("add_embedding.linear_2.", "label_emb.0.2."),
             ("conv_in.", "input_blocks.0.0."), ("conv_norm_out.", "out.0."), ("conv_out.", "out.2."),
             ("mid_block.resnets.0.", "middle_block.0."), ("mid_block.attentions.0.", "middle_block.1."),
             ("mid_block.resnets.1.", "middle_block.2.")]
    for b in range(len(config["down_block_types"])):
        for j in range(n):
            i = 1 + b * (n + 1) + j
            pairs += [(f"down_blocks.{b}.resnets.{j}.", f"input_blocks.{i}.0."),
                      (f"down_blocks.{b}.attentions.{j}.", f"input_blocks.{i}.1.")]
        pairs.append((f"down_blocks.{b}.downsamplers.0.conv.", f"input_blocks.{1 + b * (n + 1) + n}.0.op."))
    for b, kind in enumerate(config["up_block_types"]):
        for j in range(n + 1):
            i = b * (n + 1) + j
            pairs += [(f"up_blocks.{b}.resnets.{j}.", f"output_blocks.{i}.0."),
                      (f"up_blocks.{b}.attentions.{j}.", f"output_blocks.{i}.1.")]
        # The upsampler follows the block's last resnet, and its attention when it has one.
        pairs.append((f"up_blocks.{b}.upsamplers.0.", f"output_blocks.{b * (n + 1) + n}.{2 if 'Attn' in kind else 1}."))
    return pairs


def _vae_prefixes(config):
    pairs = [(f"{part}.{a}", f"{part}.{b}") for part in ("encoder", "decoder") for a, b in [
        ("conv_in.", "conv_in."), ("conv_out.", "conv_out."), ("conv_norm_out.", "norm_out."),
        ("mid_block.resnets.0.", "mid.block_1."), ("mid_block.resnets.1.", "mid.block_2."),
        ("mid_block.attentions.0.", "mid.attn_1.")]]
    pairs += [("quant_conv.", "quant_conv."), ("post_quant_conv.", "post_quant_conv.")]
    for i in range(len(config["down_block_types"])):
        pairs += [(f"encoder.down_blocks.{i}.resnets.", f"encoder.down.{i}.block."),
                  (f"encoder.down_blocks.{i}.downsamplers.0.", f"encoder.down.{i}.downsample.")]
    count = len(config["up_block_types"])
    for i in range(count):  # the original numbers the decoder's blocks from the bottom up
        pairs += [(f"decoder.up_blocks.{i}.resnets.", f"decoder.up.{count - 1 - i}.block."),
                  (f"decoder.up_blocks.{i}.upsamplers.0.", f"decoder.up.{count - 1 - i}.upsample.")]
    return pairs


def _rename(key, pairs, renames=None):
    """`key` with its diffusers prefix replaced, and the rest renamed for resnets/attentions."""
    for new, old in pairs:
        if key.startswith(new):
            rest = "." + key[len(new):]
            for table, marker in renames or ():
                if marker in new:
                    for a, b in table.items():
                        rest = rest.replace(f".{a}.", f".{b}.")
            return old + rest[1:]
    raise KeyError(f"no original name for {key}")


def _openclip(state):
    """CLIPTextModelWithProjection weights under OpenCLIP's names (SDXL's second text encoder)."""
    import torch

    state = {k.removeprefix("text_model."): v for k, v in state.items()}
    out = {"positional_embedding": state.pop("embeddings.position_embedding.weight"),
           "token_embedding.weight": state.pop("embeddings.token_embedding.weight"),
           "ln_final.weight": state.pop("final_layer_norm.weight"),
           "ln_final.bias": state.pop("final_layer_norm.bias"),
           "text_projection": state.pop("text_projection.weight").T.contiguous()}
    layers = {int(k.split(".")[2]) for k in state}
    for n in sorted(layers):
        new, old = f"encoder.layers.{n}.", f"transformer.resblocks.{n}."
        for kind in ("weight", "bias"):
            out[f"{old}attn.in_proj_{kind}"] = torch.cat(
                [state.pop(f"{new}self_attn.{p}_proj.{kind}") for p in "qkv"])
        for key in [k for k in state if k.startswith(new)]:
            out[_rename(key, [(new, old)], [(OPENCLIP_LAYER, "")])] = state.pop(key)
    assert not state, f"unconverted text_encoder_2 weights: {sorted(state)}"
    return out


def original_state_dict(diffusers_path):
    """The SDXL pipeline saved at `diffusers_path` as one state dict in the original (SGM) layout."""
    from safetensors.torch import load_file

    path = Path(diffusers_path)

    def part(name):
        files = sorted((path / name).glob("*.safetensors"))
        assert len(files) == 1, f"{path / name}: expected one unsharded .safetensors file, found {files}"
        return load_file(files[0]), json.loads((path / name / "config.json").read_text())

    unet, vae = part("unet"), part("vae")
    return to_original(*unet, *vae, part("text_encoder")[0], part("text_encoder_2")[0])


def to_original(unet, unet_config, vae, vae_config, clip, openclip):
    """The four models' diffusers/transformers state dicts as one original-format state dict."""
    out = {}
    pairs = _unet_prefixes(unet_config)
    for key, value in unet.items():
        out["model.diffusion_model." + _rename(key, pairs, [(UNET_RESNET, "resnets")])] = value
    pairs = _vae_prefixes(vae_config)
    for key, value in vae.items():
        new = _rename(key, pairs, [(VAE_RESNET, "resnets"), (VAE_ATTENTION, "attentions")])
        if "mid.attn_1." in new and new.endswith("weight") and value.ndim == 2:
            value = value[:, :, None, None]  # the original's attention projections are 1×1 convolutions
        out["first_stage_model." + new] = value
    for key, value in clip.items():  # transformers' own CLIP names, under the original's prefix
        out["conditioner.embedders.0.transformer.text_model." + key.removeprefix("text_model.")] = value
    for key, value in _openclip(openclip).items():
        out["conditioner.embedders.1.model." + key] = value
    return {k: v.contiguous() for k, v in out.items()}


def build_single_file(diffusers_path, out_file):
    """Write the pipeline at `diffusers_path` as one original-format SDXL .safetensors checkpoint.

    That is the layout of SDXL checkpoints distributed as one file (sd_xl_base_1.0.safetensors), which
    StableDiffusionXLPipeline.from_single_file reads. Returns the Path written (atomically).
    """
    from safetensors.torch import save_file

    out_file = Path(out_file)
    out_file.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_file.with_name(f".{out_file.name}.{os.getpid()}.tmp")
    try:
        save_file(original_state_dict(diffusers_path), tmp, metadata={"format": "pt"})
        os.replace(tmp, out_file)
    finally:
        tmp.unlink(missing_ok=True)
    return out_file


def build_ip_adapter(sdxl_path, path):
    """A tiny IP-Adapter for the tiny SDXL UNet at `sdxl_path`, laid out as `load_ip_adapter` reads it:
    `ip-adapter_sdxl.safetensors` (image projection + per-layer key/value weights) and `image_encoder/`."""
    import torch
    from diffusers import UNet2DConditionModel
    from safetensors.torch import save_file
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    def build(tmp):
        torch.manual_seed(0)
        unet = UNet2DConditionModel.from_pretrained(sdxl_path, subfolder="unet")
        cross, channels = unet.config.cross_attention_dim, unet.config.block_out_channels
        embed_dim, tokens = 32, 4  # CLIP image embedding size; image tokens per reference
        tensors = {}
        key_id = 1  # diffusers numbers the cross-attention layers 1, 3, 5, ... in processor order
        for name in unet.attn_processors:
            if name.endswith("attn1.processor"):
                continue  # self-attention takes no image tokens
            block = name.split(".")[0]
            if block == "mid_block":
                hidden = channels[-1]
            else:
                index = int(name.split(".")[1])
                hidden = (channels if block == "down_blocks" else list(reversed(channels)))[index]
            for kind in ("to_k_ip", "to_v_ip"):
                tensors[f"ip_adapter.{key_id}.{kind}.weight"] = torch.nn.Linear(cross, hidden, bias=False).weight.data
            key_id += 2
        projection, norm = torch.nn.Linear(embed_dim, tokens * cross), torch.nn.LayerNorm(cross)
        tensors.update({"image_proj.proj.weight": projection.weight.data, "image_proj.proj.bias": projection.bias.data,
                        "image_proj.norm.weight": norm.weight.data, "image_proj.norm.bias": norm.bias.data})
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp / "ip-adapter_sdxl.safetensors"))
        encoder = CLIPVisionModelWithProjection(CLIPVisionConfig(
            hidden_size=32, projection_dim=embed_dim, num_hidden_layers=2, num_attention_heads=4,
            intermediate_size=37, image_size=32, patch_size=4, num_channels=3))
        encoder.save_pretrained(tmp / "image_encoder")

    return build_atomically(path, build)


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(prog="python -m sdxl_tasks.devmodel", description=__doc__)
    parser.add_argument("path", help="folder for the tiny diffusers pipeline")
    parser.add_argument("--single-file", help="also write it as one original-format .safetensors checkpoint")
    parser.add_argument("--ip-adapter", help="also write a tiny IP-Adapter for it into this folder")
    args = parser.parse_args()
    print(f"tiny SDXL pipeline written to {build(args.path)}")
    if args.single_file:
        print(f"the same model as one original-format checkpoint: {build_single_file(args.path, args.single_file)}")
    if args.ip_adapter:
        print(f"tiny IP-Adapter written to {build_ip_adapter(args.path, args.ip_adapter)}")
