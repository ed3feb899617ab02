"""Tiny randomly initialised WAN 2.1 and prompt-enhancer models, built from config for development.

They have the real architectures at toy sizes, so loading and generation code runs unchanged
without downloads. Usage: `python -m wan_tasks.devmodels WAN_PATH ENHANCER_PATH`.
"""

import sys

from generation.devmodels import build_atomically, vocabulary, word_level_tokenizer


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
    if len(argv) != 2:
        sys.exit("usage: python -m wan_tasks.devmodels WAN_PATH ENHANCER_PATH")
    build_wan(argv[0])
    build_enhancer(argv[1])


if __name__ == "__main__":
    main(sys.argv[1:])
