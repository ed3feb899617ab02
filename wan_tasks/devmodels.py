"""Tiny randomly initialised WAN 2.1 and prompt-enhancer models, built from config for development.

They have the real architectures at toy sizes, so loading and generation code runs unchanged
without downloads. Usage: `python -m wan_tasks.devmodels WAN_PATH ENHANCER_PATH [--i2v I2V_PATH]`.
"""

import argparse
import sys

from generation.worker.devmodels import build_atomically, vocabulary, word_level_tokenizer


def wan_tokenizer():
    """A UMT5-style tokenizer: word-level over the shared vocabulary, ending every sequence with </s>."""
    # UMT5 ends every sequence with </s> as the real tokenizer does; the pipeline pads to
    # max_sequence_length (512) itself.
    return word_level_tokenizer(["<pad>", "</s>", "<unk>"], "$A </s>", model_max_length=512,
                                pad_token="<pad>", eos_token="</s>", unk_token="<unk>")


def build_wan(path):
    """Write a tiny random WAN 2.1 text-to-video pipeline (diffusers layout) to `path`."""
    import torch
    from diffusers import AutoencoderKLWan, UniPCMultistepScheduler, WanPipeline, WanTransformer3DModel
    from transformers import UMT5Config, UMT5EncoderModel

    tokenizer = wan_tokenizer()
    # Sizes follow diffusers' own tests/pipelines/wan/test_wan.py, except rope_max_seq_len: the real
    # model's 1024 (a table, not weights) lets the tiny one render production sizes too.
    torch.manual_seed(0)
    vae = AutoencoderKLWan(base_dim=3, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
                           temperal_downsample=[False, True, True])
    torch.manual_seed(0)
    text_encoder = UMT5EncoderModel(UMT5Config(
        vocab_size=len(tokenizer), d_model=32, d_kv=8, d_ff=37, num_layers=2, num_heads=4,
        relative_attention_num_buckets=8, pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id, decoder_start_token_id=tokenizer.pad_token_id,
    ))
    torch.manual_seed(0)
    transformer = WanTransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12, in_channels=16,
        out_channels=16, text_dim=32, freq_dim=256, ffn_dim=32, num_layers=2, cross_attn_norm=True,
        qk_norm="rms_norm_across_heads", rope_max_seq_len=1024,
    )
    scheduler = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True,
                                        flow_shift=3.0)
    pipe = WanPipeline(tokenizer=tokenizer, text_encoder=text_encoder, vae=vae, transformer=transformer,
                       scheduler=scheduler)
    return build_atomically(path, pipe.save_pretrained)


# The tiny CLIP vision encoder: its hidden size is the I2V transformer's image_dim (1280 for the real
# ViT-H/14 of WAN 2.1 I2V), its image size what the image processor resizes and crops to (224 there).
I2V_IMAGE_DIM, I2V_IMAGE_SIZE = 32, 32


def build_wan_i2v(wan_path, path):
    """Write a tiny random WAN 2.1 image-to-video pipeline (WanImageToVideoPipeline) to `path`.

    Its text encoder, tokenizer, VAE and scheduler are those of the tiny text-to-video model at
    `wan_path`, as the real WAN 2.1 I2V and T2V models share the UMT5 encoder and the VAE: a worker
    loads the I2V transformer and image encoder beside the T2V pipeline and reuses the rest.
    """
    import torch
    from diffusers import AutoencoderKLWan, UniPCMultistepScheduler, WanImageToVideoPipeline, WanTransformer3DModel
    from transformers import AutoTokenizer, CLIPImageProcessorPil, CLIPVisionConfig, CLIPVisionModel, UMT5EncoderModel

    text_encoder = UMT5EncoderModel.from_pretrained(wan_path, subfolder="text_encoder", local_files_only=True)
    tokenizer = AutoTokenizer.from_pretrained(wan_path, subfolder="tokenizer", local_files_only=True)
    vae = AutoencoderKLWan.from_pretrained(wan_path, subfolder="vae", local_files_only=True)
    scheduler = UniPCMultistepScheduler.from_pretrained(wan_path, subfolder="scheduler", local_files_only=True)
    t2v = WanTransformer3DModel.load_config(wan_path, subfolder="transformer", local_files_only=True)
    torch.manual_seed(0)
    image_encoder = CLIPVisionModel(CLIPVisionConfig(
        hidden_size=I2V_IMAGE_DIM, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
        image_size=I2V_IMAGE_SIZE, patch_size=4, num_channels=3,
    ))
    # The PIL implementation, as transformers picks without torchvision (the workers do not need it).
    image_processor = CLIPImageProcessorPil(size={"shortest_edge": I2V_IMAGE_SIZE},
                                            crop_size={"height": I2V_IMAGE_SIZE, "width": I2V_IMAGE_SIZE})
    torch.manual_seed(0)
    inner_dim = t2v["num_attention_heads"] * t2v["attention_head_dim"]
    # The T2V transformer's shape, taking 36 input channels (16 noise latents + 4 mask + 16 latents of
    # the reference video) and image tokens through their own key/value projections, as WAN 2.1 I2V.
    transformer = WanTransformer3DModel(
        patch_size=tuple(t2v["patch_size"]), num_attention_heads=t2v["num_attention_heads"],
        attention_head_dim=t2v["attention_head_dim"], in_channels=2 * vae.config.z_dim + 4,
        out_channels=vae.config.z_dim, text_dim=text_encoder.config.d_model, freq_dim=t2v["freq_dim"],
        ffn_dim=t2v["ffn_dim"], num_layers=t2v["num_layers"], cross_attn_norm=t2v["cross_attn_norm"],
        qk_norm=t2v["qk_norm"], image_dim=I2V_IMAGE_DIM, added_kv_proj_dim=inner_dim,
        rope_max_seq_len=t2v["rope_max_seq_len"],
    )
    pipe = WanImageToVideoPipeline(tokenizer=tokenizer, text_encoder=text_encoder, vae=vae, scheduler=scheduler,
                                   image_processor=image_processor, image_encoder=image_encoder,
                                   transformer=transformer)
    return build_atomically(path, pipe.save_pretrained)


# ChatML, as Qwen2 instruct models use.
CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def enhancer_tokenizer():
    """A small byte-level BPE tokenizer of the Qwen2 kind, with its ChatML chat template."""
    import json

    from tokenizers import AddedToken, Tokenizer, models, pre_tokenizers, trainers
    from transformers import Qwen2Tokenizer

    # AutoTokenizer always rebuilds a qwen2 model's tokenizer as byte-level BPE from its vocab and
    # merges, so a WordLevel tokenizer would not survive loading: train a tiny BPE instead.
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    trainer = trainers.BpeTrainer(vocab_size=1000, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    bpe.train_from_iterator([" ".join(vocabulary())], trainer)
    model = json.loads(bpe.to_str())["model"]
    tokenizer = Qwen2Tokenizer(vocab=model["vocab"], merges=[tuple(m) for m in model["merges"]],
                               eos_token="<|im_end|>", pad_token="<|endoftext|>", model_max_length=2048)
    tokenizer.add_tokens([AddedToken("<|im_start|>", special=True)])
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def build_enhancer(path):
    """Write a tiny random Qwen2 causal LM and its chat tokenizer to `path`."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    tokenizer = enhancer_tokenizer()
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(Qwen2Config(
        vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, intermediate_size=64, max_position_embeddings=2048,
        pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
    ))
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id

    def save(target):
        model.save_pretrained(target)
        tokenizer.save_pretrained(target)

    return build_atomically(path, save)


def main(argv):
    parser = argparse.ArgumentParser(prog="python -m wan_tasks.devmodels", description=__doc__)
    parser.add_argument("wan_path", help="folder for the tiny WAN 2.1 text-to-video pipeline")
    parser.add_argument("enhancer_path", help="folder for the tiny prompt enhancer")
    parser.add_argument("--i2v", help="also write a tiny image-to-video pipeline sharing the WAN model's "
                                      "text encoder and VAE into this folder")
    args = parser.parse_args(argv)
    build_wan(args.wan_path)
    build_enhancer(args.enhancer_path)
    if args.i2v:
        build_wan_i2v(args.wan_path, args.i2v)


if __name__ == "__main__":
    main(sys.argv[1:])
