"""Tiny randomly initialised WAN 2.1 and prompt-enhancer models, built from config for development.

They have the real architectures at toy sizes, so loading and generation code runs unchanged
without downloads. Usage: `python -m wan_tasks.devmodels WAN_PATH ENHANCER_PATH`.
"""

import os
import shutil
import sys
from pathlib import Path

# Common prompt words: the WAN tokenizer's vocabulary (anything else is <unk>) and the text the
# enhancer's BPE is trained on.
WORDS = """
a an the and or but of in on at to from with without by for over under above below near into onto
through across behind beside between around inside outside up down left right front back top bottom
is are was be being has have it its this that these those there here he she they we you his her their
cat dog bird horse fish fox wolf bear lion tiger rabbit deer owl eagle dragon butterfly
man woman boy girl child person people couple family friend crowd dancer runner rider knight robot
city street road bridge river lake sea ocean beach island mountain hill valley forest tree trees
flower flowers garden field grass desert snow rain cloud clouds sky sun moon star stars night day
morning evening sunset sunrise light shadow fog mist storm wind fire water ice stone rock sand
house home room window door wall floor roof castle tower temple church market cafe kitchen library
car train boat ship plane bicycle bus truck
red orange yellow green blue purple pink brown black white gray grey gold golden silver dark bright
big small tall short long wide old young new ancient modern beautiful pretty cute happy sad calm
quiet loud soft hard warm cold hot wet dry clean dusty shiny glowing colorful vivid vibrant detailed
sharp smooth rough gentle wild peaceful dramatic cinematic realistic photorealistic epic magical
walk walks walking run runs running jump jumps jumping fly flies flying swim swims swimming dance
dances dancing sit sits sitting stand stands standing look looks looking play plays playing
sleep sleeps sleeping eat eats eating drink smile smiles smiling move moves moving turn turns
ride rides riding fall falls falling rise rises rising shine shines shining glow glows drift drifts
wave waves waving spin spins spinning float floats floating hold holds holding watch watches
slow slowly fast quickly camera shot close closeup wide aerial view scene background foreground
portrait landscape style painting photo photograph film movie frame lighting lens focus depth
motion pan zoom tracking steady high low angle soft volumetric neon lamp candle lantern
hair eyes face hand hands dress coat hat shirt jacket boots
one two three many some every each all very more most much few
""".split()
PUNCTUATION = list(".,!?;:'\"-()")


def wan_tokenizer():
    """A UMT5-style tokenizer: WordLevel over WORDS, lowercased, split on spaces and punctuation."""
    from tokenizers import AddedToken, Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "</s>", "<unk>"]
    vocab = {}
    for token in specials + WORDS + PUNCTUATION:
        vocab.setdefault(token, len(vocab))
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tokenizer.normalizer = normalizers.Lowercase()
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()]
    )
    tokenizer.add_special_tokens([AddedToken(t, normalized=False, special=True) for t in specials])
    # UMT5 ends every sequence with </s>, as the real tokenizer does.
    tokenizer.post_processor = processors.TemplateProcessing(
        single="$A </s>", special_tokens=[("</s>", vocab["</s>"])]
    )
    # The pipeline pads to max_sequence_length (512) itself.
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, model_max_length=512, pad_token="<pad>",
                                   eos_token="</s>", unk_token="<unk>")


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
    _write(path, pipe.save_pretrained)


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
    bpe.train_from_iterator([" ".join(WORDS + PUNCTUATION)], trainer)
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

    _write(path, save)


def _write(path, save):
    """Call save(folder) on a temporary folder, then swap it into `path` so readers never see half."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    old = path.with_name(f".{path.name}.old-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    save(tmp)
    if path.exists():
        path.rename(old)
    tmp.rename(path)
    shutil.rmtree(old, ignore_errors=True)


def main(argv):
    if len(argv) != 2:
        sys.exit("usage: python -m wan_tasks.devmodels WAN_PATH ENHANCER_PATH")
    build_wan(argv[0])
    build_enhancer(argv[1])


if __name__ == "__main__":
    main(sys.argv[1:])
