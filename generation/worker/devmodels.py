"""What the tiny development models' builders share: a prompt vocabulary, a word-level tokenizer and
atomic writes.

tokenizers and transformers are imported inside the functions: `manage.py setup` and the tests import
this module and need them only when they build.
"""

import importlib
import shutil
import tempfile
from pathlib import Path

# Common prompt words. Anything else tokenizes as unknown, so the tests' prompts should use these.
WORDS = """
a an the and or but of in on at to from with without by for as is are was were be been being has have
it its this that these those there here he she they we you i me my your his her their our them us who
what which where when why how all any both each every few more most much other some such no not only
own same so than too very can will just should now up down out over under again once off into onto
through during before after above below between behind beside near far inside outside around across
along left right front back top bottom
one two three four five six seven eight nine ten first second third many several single pair group
man men woman women person people girl girls boy boys child lady ladies guy guys friend friends
couple family crowd figure character dancer runner rider knight portrait face eyes eye hair hand hands
arm arms leg legs body head mouth nose smile lips skin fingers feet
red orange yellow green blue purple pink brown black white gray grey gold golden silver dark light
bright colorful pale warm cold hot soft hard sharp smooth rough shiny glowing neon pastel vivid vibrant
big small large tiny tall short long wide old young new ancient modern beautiful pretty cute ugly
happy sad calm angry serious quiet loud wet dry clean dusty gentle wild peaceful magical elegant simple
detailed realistic photorealistic cinematic dramatic epic
photo photograph picture painting drawing sketch illustration render art artwork style oil watercolor
digital anime cartoon comic studio film movie frame lighting shadow shadows sunlight moonlight sunset
sunrise night day morning evening sky cloud clouds sun moon star stars rain snow fog mist storm wind
fire ice lamp candle lantern volumetric
city street road house home room window door wall floor roof table chair bed kitchen garden park
forest tree trees flower flowers grass field landscape mountain mountains hill valley river lake sea
ocean beach water sand rock stone desert island bridge tower castle church temple market cafe library
building car train boat ship plane bike bicycle bus truck
dog dogs cat cats bird birds horse fish fox wolf bear lion tiger rabbit deer owl eagle butterfly
animal animals dragon robot
wearing dress shirt coat jacket hat glasses shoes boots
walk walks walking run runs running jump jumps jumping fly flies flying swim swims swimming dance
dances dancing sit sits sitting stand stands standing look looks looking play plays playing reading
sleep sleeps sleeping eat eats eating drink smiles smiling move moves moving turn turns ride rides
riding fall falls falling rise rises rising shine shines shining glow glows drift drifts wave waves
waving spin spins spinning float floats floating hold holds holding watch watches lying
slow slowly fast quickly motion pan zoom tracking steady
background foreground scene view close closeup full shot angle high low aerial wide lens camera focus
depth bokeh blur blurry quality best masterpiece resolution hd 4k 8k ultra highly intricate texture
pattern color colors tone mood atmosphere
""".split()

PUNCTUATION = list(",.;:!?'\"()[]{}-_/&+*#%=<>|@~`$^\\")


def negative_words():
    """Every word of the seeded negative-prompt terms, so the default negative prompt has no unknowns."""
    seed = importlib.import_module("generation.migrations.0002_seed_negative_terms")
    terms = [t for terms in seed.ALWAYS.values() for t in terms] + seed.MULTI_PARTY
    return [word for term in terms for word in term.lower().split()]


def vocabulary():
    """The prompt words, negative-prompt words and punctuation, each once, in a fixed order."""
    return list(dict.fromkeys(WORDS + negative_words() + PUNCTUATION))


def word_level(specials, single, pair=None, *, unk_token):
    """A lowercasing WordLevel `tokenizers.Tokenizer` over `specials` (ids 0, 1, ...) then `vocabulary()`.

    `single`/`pair` are post-processor templates. Built without transformers: the web tier reads it too.
    """
    from tokenizers import AddedToken, Tokenizer, normalizers, pre_tokenizers, processors
    from tokenizers.models import WordLevel

    vocab = {token: i for i, token in enumerate(dict.fromkeys(specials + vocabulary()))}
    tokenizer = Tokenizer(WordLevel(vocab, unk_token=unk_token))
    tokenizer.normalizer = normalizers.Lowercase()
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()]
    )
    # Special, so that written in a prompt they are neither lowercased nor split.
    tokenizer.add_special_tokens([AddedToken(t, normalized=False, special=True) for t in specials])
    tokenizer.post_processor = processors.TemplateProcessing(
        single=single, pair=pair, special_tokens=[(t, vocab[t]) for t in specials]
    )
    return tokenizer


def word_level_tokenizer(specials, single, pair=None, *, model_max_length, **roles):
    """`word_level(...)` wrapped for transformers; `roles` name the special tokens (unk_token=..., ...)."""
    from transformers import PreTrainedTokenizerFast

    tokenizer = word_level(specials, single, pair, unk_token=roles["unk_token"])
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, model_max_length=model_max_length, **roles)


def build_atomically(path, build):
    """Call build(folder) on a new folder beside `path`, then swap it into place; returns the Path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Built beside the target (same filesystem) and renamed in, so a reader never sees half a model.
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    old = tmp.with_name(f"{tmp.name}.old")
    try:
        build(tmp)
        if path.exists():
            path.rename(old)
        tmp.rename(path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(old, ignore_errors=True)
    return path
