#!/usr/bin/env python
"""Build a tiny random Llama as a Hugging Face model directory, offline and deterministically.

    .venv-vllm/bin/python scripts/build_tiny_model.py OUT_DIR [--force]

For exercising a real vLLM server on the CPU in tests: it loads in seconds and its output is
gibberish (random weights), so tests check structure and token counts, never words.

- tokenizer: byte-level BPE trained with `tokenizers` on the text below (our own words), with the
  ChatML special tokens; `chat_template` (ChatML) is in tokenizer_config.json;
- model: LlamaConfig(hidden 128, 2 heads -> head_dim 64 (vLLM's CPU attention rejects 16), 2 layers,
  max_position_embeddings 2048), weights from a fixed seed, saved as bfloat16 safetensors (the dtype
  vLLM picks on the CPU anyway);
- generation_config.json with the BOS/EOS ids.

Idempotent: when OUT_DIR already holds a build of this exact recipe (the marker file matches) it
does nothing. The directory is built beside OUT_DIR and renamed into place, so a build that stops
half-way never looks finished. Needs torch, transformers and tokenizers (the vLLM venv has them).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

MARKER = ".sdg-tiny-model"
SEED = 1234
DTYPE = "bfloat16"
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
BPE_VOCAB_SIZE = 1024  # an upper bound: the few KB below yield fewer merges
MODEL = dict(hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=2,
             num_key_value_heads=2, head_dim=64, max_position_embeddings=2048, rms_norm_eps=1e-5,
             rope_theta=10000.0, tie_word_embeddings=False, initializer_range=0.02, hidden_act="silu")
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

# Training text for the tokenizer: a few KB written for this script.
CORPUS = """\
A taxonomy is a tree of folders. Each leaf holds a file named qna.yaml with a handful of seed
examples: questions, answers, and sometimes a context passage. Knowledge leaves also point at a
repository of documents, pinned to one commit, and name the markdown files that matter.

The generator reads the leaves that changed against a base branch, checks them, and then asks a
teacher model to write many more examples in the same spirit. A teacher is only a server that speaks
the OpenAI protocol: it answers chat completions and plain completions over HTTP.

On a laptop the teacher runs on the CPU. On a cluster it runs on graphics cards, one server per group
of cards, and the work is spread over every server at once. When a server is slow to start, the
generator waits; when it never starts, the generator says why, shows the last lines of its log, and
stops everything it started. No process is left behind, whatever happens.

Seed examples should be short and varied. A good question has one clear answer. A good answer is
correct, complete, and written in plain words. Context passages should be long enough to answer the
question and no longer. The generator keeps every example it writes in a line of JSON, with the leaf
it came from, the prompt that produced it, and the teacher that answered.

Numbers help: 0 1 2 3 4 5 6 7 8 9 10 11 12 16 32 64 100 128 256 512 1000 1024 2048 4096 65536.
Dates and times: 2024-05-17, 09:30, 23:59:59, Monday, Tuesday, Wednesday, Thursday, Friday.
Punctuation and code: (a, b) [c; d] {e: f} <g/> "quoted" 'single' x = y + z * 2 - 1 / 3 % 4;
def main(argv): return 0 if ok else 1  # comment
for i in range(10): print(i ** 2)
SELECT name, count(*) FROM leaves WHERE kind = 'knowledge' GROUP BY name;

The weather was mild for October. Rain came in the evening and stopped before dawn; the river rose a
little and fell again. In the morning the market opened early, and the baker sold out of rye bread by
ten. Children walked to school along the canal, counting the boats, and an old man fed the ducks.

To make tea, boil fresh water, warm the pot, add one spoon of leaves for each cup, pour, and wait
three to five minutes. Milk is optional. Some prefer lemon; some prefer honey; some prefer nothing.

A recipe for a simple loaf: five hundred grams of flour, ten grams of salt, seven grams of yeast, and
three hundred and fifty grams of warm water. Mix, knead for ten minutes, rest for an hour, shape,
rest again, and bake at two hundred and twenty degrees for thirty five minutes.

Questions and answers. What is the capital of a country? The city where its government sits. How
many days are in a week? Seven. Which planet is closest to the sun? Mercury. What do bees make?
Honey and wax. Why is the sky blue? Because air scatters blue light more than red light.

Mathematics: two plus two is four; three times seven is twenty one; the square root of eighty one is
nine; a right angle has ninety degrees; a circle's circumference is pi times its diameter.

The quick brown fox jumps over the lazy dog. Pack my box with five dozen liquor jugs. How vexingly
quick daft zebras jump! Sphinx of black quartz, judge my vow. Waltz, bad nymph, for quick jigs vex.

System: you are a careful assistant. User: summarise the passage in one sentence. Assistant: the
passage says that the generator starts a teacher, asks it for examples, and always cleans up.
User: write three questions about the text. Assistant: 1. What is a leaf? 2. What does the teacher
do? 3. What happens when a server fails to start?
"""


def recipe() -> dict:
    """Everything the output depends on; its hash is the marker."""
    import tokenizers
    import torch
    import transformers

    return {"seed": SEED, "dtype": DTYPE, "special_tokens": SPECIAL_TOKENS, "bpe_vocab_size": BPE_VOCAB_SIZE, "model": MODEL,
            "chat_template": CHAT_TEMPLATE, "corpus_sha256": hashlib.sha256(CORPUS.encode()).hexdigest(),
            "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                         "tokenizers": tokenizers.__version__}}


def marker_text() -> str:
    return hashlib.sha256(json.dumps(recipe(), sort_keys=True).encode()).hexdigest() + "\n"


def train_tokenizer(out: Path):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(vocab_size=BPE_VOCAB_SIZE, min_frequency=2, special_tokens=SPECIAL_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    lines = CORPUS.splitlines(keepends=True)
    tok.train_from_iterator(lines, trainer=trainer, length=len(lines))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|im_start|>", eos_token="<|im_end|>",
                                   pad_token="<|endoftext|>", unk_token=None, model_max_length=MODEL["max_position_embeddings"],
                                   clean_up_tokenization_spaces=False)
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(out)
    # The ChatML template belongs in tokenizer_config.json (newer transformers may write it to
    # chat_template.jinja instead; vLLM and transformers read either, we keep both identical).
    cfg_path = out / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    cfg["chat_template"] = CHAT_TEMPLATE
    cfg["tokenizer_class"] = "PreTrainedTokenizerFast"  # the name every transformers release knows
    cfg_path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    jinja = out / "chat_template.jinja"
    if jinja.exists():
        jinja.write_text(CHAT_TEMPLATE, encoding="utf-8")
    return fast


def build(out: Path) -> None:
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    torch.manual_seed(SEED)
    tokenizer = train_tokenizer(out)
    bos, eos, pad = (tokenizer.convert_tokens_to_ids(t) for t in ("<|im_start|>", "<|im_end|>", "<|endoftext|>"))
    config = LlamaConfig(vocab_size=len(tokenizer), bos_token_id=bos, eos_token_id=eos, pad_token_id=pad,
                         dtype=DTYPE, **MODEL)
    model = LlamaForCausalLM(config).to(getattr(torch, DTYPE)).eval()  # initialised in float32, then cast
    model.generation_config = GenerationConfig(bos_token_id=bos, eos_token_id=[eos, pad], pad_token_id=pad)
    model.save_pretrained(out, safe_serialization=True)
    (out / MARKER).write_text(marker_text(), encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir", type=Path, help="the model directory to create")
    parser.add_argument("--force", action="store_true", help="rebuild even when OUT_DIR is up to date, "
                                                              "and replace a directory that is not ours")
    args = parser.parse_args(argv)
    out: Path = args.out_dir.resolve()
    want = marker_text()
    marker = out / MARKER
    if not args.force and (out / "config.json").exists() and marker.exists() and marker.read_text() == want:
        print(f"[build_tiny_model] {out} is up to date; nothing to do")
        return 0
    if out.exists() and any(out.iterdir()) and not marker.exists() and not args.force:
        print(f"[build_tiny_model] error: {out} exists and is not a tiny-model build; pass --force to replace it",
              file=sys.stderr)
        return 1
    start = time.monotonic()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        build(tmp)
        umask = os.umask(0)
        os.umask(umask)
        for p in (tmp, *tmp.iterdir()):  # mkdtemp made it private; give it the usual modes
            p.chmod((0o777 if p.is_dir() else 0o666) & ~umask)
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    files = ", ".join(sorted(p.name for p in out.iterdir() if not p.name.startswith(".")))
    print(f"[build_tiny_model] built {out} in {time.monotonic() - start:.1f} s: {files}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
