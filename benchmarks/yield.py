#!/usr/bin/env python3
"""What each kept sample costs: kept samples per 1k teacher tokens, with and without leaf-level targets.

A program that prints figures, not a test. In ONE run, against ONE real teacher (the embedded SmolLM2-135M on
llama.cpp, `--n-parallel` slots, 2 threads; or `--endpoint-url`): a knowledge-heavy taxonomy, as the issue
asks (`--taxonomy knowledge-heavy`, the default: the example's solar-eclipse knowledge leaf and two more with
their own documents, 50 of its 70 target samples at scale 2, beside the example's grounded and freeform writing
skills; `--taxonomy example`: `init_taxonomy`'s, one leaf of each kind, what the figures before 2026-12-03
used), generated twice with the simple pipeline at `--scale`, `pipeline.leaf_targets=false` (every planned unit
runs and keeps at most its share: the rule before leaf-level targets) and `=true` (the default). For each it
reads the run's manifest.json and prints kept samples, requests, prompt and completion tokens, kept per 1k
tokens (prompt + completion), requests per kept sample, the share of completion tokens spent on samples not
kept, the prefix-cache hit rate the server reported (usage.prompt_tokens_details.cached_tokens) and the wall
time; per leaf kind, kept, requests and tokens per kept sample (from the run's journals); then the ratio
after/before of kept per 1k tokens (issue target >= 2x) and of kept per second.

`--before-ref REF` adds a third phase, first: the code as it stood at git REF (extracted with `git archive`, run
in a child Python with it on the path) on the same taxonomy, teacher and settings; its kept rows are judged
again by today's quality stage (that code may predate seed-copy and near-duplicate removal), and what passes
counts as kept (`kept_by_its_own_rules` says what it kept itself). The issue's target is 2x "today's" kept per
1k tokens, today being the code before any of its work (141b5e1); leaf_targets=false on the current code stands
for it (the two were within 3 % of each other in one run, 1.51 and 1.55 kept per 1k tokens). Both ratios are
printed.

The server is started afresh for each phase (no phase profits from prefixes the other left in its slots).

    .venv/bin/python benchmarks/yield.py                 # scale 2, 4 slots
    .venv/bin/python benchmarks/yield.py --scale 1 --max-tokens 256
    .venv/bin/python benchmarks/yield.py --gguf ~/.cache/sdg-bench/qwen2.5-coder-0.5b-instruct.gguf --before-ref 141b5e1
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.bench_common import fmt_load, wait_for_quiet  # noqa: E402


def _teacher(args: argparse.Namespace, tmp: Path):
    if args.endpoint_url:
        return contextlib.nullcontext(args.endpoint_url)
    from sdg.config.compose import compose_config, to_object
    from sdg.teacher.backends import LlamaCppServer
    from sdg.teacher.models import embedded_gguf

    model_dir = Path(to_object(compose_config([])).teacher.model_dir)
    gguf = args.gguf or str(embedded_gguf(model_dir))
    server = LlamaCppServer(gguf=gguf, model_name="teacher", context_length=4096,
                            n_parallel=args.n_parallel, n_threads=2, log_path=tmp / "teacher.log",
                            startup_timeout_s=300)

    @contextlib.contextmanager
    def served():
        with server as ep:
            yield ep.base_url

    return served()


# what a phase run on another commit's code does in its own Python (that code's modules, not ours)
_CHILD = """
import json, sys
from sdg.config.compose import compose_config, to_object
from sdg.run import generate
result = generate(to_object(compose_config(json.loads(sys.argv[1]))), log=lambda m: None)
print("SDG_RUN_DIR " + str(result.run_dir))
"""


KNOWLEDGE_HEAVY = Path(__file__).resolve().parent / "data" / "knowledge_heavy"
# leaf file in KNOWLEDGE_HEAVY/leaves -> where it goes in the taxonomy
_EXTRA_LEAVES = {"ocean_tides.yaml": "knowledge/science/oceanography/ocean_tides/qna.yaml",
                 "honey_bees.yaml": "knowledge/science/biology/honey_bees/qna.yaml"}


def _git(args: list[str], cwd: Path) -> str:
    who = ["-c", "user.name=sdg benchmarks", "-c", "user.email=sdg@localhost", "-c", "commit.gpgsign=false"]
    return subprocess.run(["git", *who, *args], cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


def _taxonomy(kind: str, tmp: Path) -> Path:
    """The example taxonomy (one leaf of each kind), or the knowledge-heavy one the issue asks for: the example's
    knowledge, grounded and freeform writing leaves (its foundational leaf left out) and two more knowledge leaves
    whose documents (benchmarks/data/knowledge_heavy, ~1,000 words each: one or two 1,000-token chunks) sit in a
    local git repository (hence taxonomy.documents.allow with `local`, see _phase)."""
    import shutil

    from sdg.taxonomy.init import init_taxonomy

    path = init_taxonomy(tmp / "taxonomy").path
    if kind == "example":
        return path
    shutil.rmtree(path / "foundational_skills")
    docs = tmp / "knowledge-heavy-documents"
    shutil.copytree(KNOWLEDGE_HEAVY / "documents", docs)
    _git(["init", "-q"], docs)
    _git(["add", "-A"], docs)
    _git(["commit", "-q", "-m", "documents"], docs)
    commit = _git(["rev-parse", "HEAD"], docs)
    for name, where in _EXTRA_LEAVES.items():
        text = (KNOWLEDGE_HEAVY / "leaves" / name).read_text(encoding="utf-8")
        (path / where).parent.mkdir(parents=True)
        (path / where).write_text(text.replace("{{DOCUMENTS_REPO}}", docs.resolve().as_uri())
                                  .replace("{{DOCUMENTS_COMMIT}}", commit), encoding="utf-8")
    _git(["add", "-A"], path)
    _git(["commit", "-q", "-m", "knowledge-heavy taxonomy"], path)
    return path


def _source_at(ref: str, dest: Path) -> Path:
    """The repository's files at `ref` (git archive, no worktree left behind) under `dest`."""
    repo = Path(__file__).resolve().parent.parent
    tar = subprocess.run(["git", "-C", str(repo), "archive", "--format=tar", ref],
                         capture_output=True, check=True).stdout
    with tarfile.open(fileobj=io.BytesIO(tar)) as archive:
        archive.extractall(dest, filter="data")
    return dest


def _phase(args: argparse.Namespace, tmp: Path, taxonomy: Path, name: str, leaf_targets: bool | None,
           source: Path | None = None) -> dict:
    """One generate run on a fresh server: this code (leaf_targets on or off), or `source`'s in a child."""
    from sdg.config.compose import compose_config, to_object
    from sdg.run import generate

    with _teacher(args, tmp) as url:
        overrides = [
            f"taxonomy.path={taxonomy}", "taxonomy.base=empty", f"pipeline.sdg_scale_factor={args.scale}",
            "taxonomy.documents.chunk_tokens=1000", "taxonomy.documents.allow=[https,ssh,local]",
            "teacher=endpoint", f"teacher.endpoint_url={url}",
            f"teacher.max_tokens={args.max_tokens}", f"generate.output_dir={tmp / f'out-{name}'}",
            "generate.progress=none", f"generate.max_concurrency={2 * args.n_parallel}", "generate.allow_empty=true"]
        t0 = time.monotonic()
        if source is None:
            overrides.append(f"pipeline.leaf_targets={str(leaf_targets).lower()}")
            run_dir = generate(to_object(compose_config(overrides)), log=lambda m: None).run_dir
        else:
            env = {**os.environ, "PYTHONPATH": str(source)}
            out = subprocess.run([sys.executable, "-c", _CHILD, json.dumps(overrides)], cwd=source, env=env,
                                 capture_output=True, text=True, check=False)
            lines = [ln for ln in out.stdout.splitlines() if ln.startswith("SDG_RUN_DIR ")]
            if out.returncode != 0 or not lines:
                raise SystemExit(f"the {name} phase failed (exit {out.returncode}):\n{out.stderr[-3000:]}")
            run_dir = Path(lines[-1].split(" ", 1)[1])
        wall = time.monotonic() - t0
    m = json.loads((run_dir / "manifest.json").read_text())
    c = m["counts"]
    extra = {}
    if source is not None:  # its kept rows judged by today's quality stage: they count as kept
        rejudged = _rejudged(run_dir, m, overrides)
        extra["kept_by_its_own_rules"] = c["kept"]
        for leaf in m["leaves"]:
            leaf["kept"] = rejudged[leaf["id"]]
        c["kept"] = sum(rejudged.values())
    per_leaf = _per_leaf(run_dir, m)
    tokens = c["prompt_tokens"] + c["completion_tokens"]
    return {"kept": c["kept"], "target": c["target_samples"], "requests": c["requests"],
            "prompt_tokens": c["prompt_tokens"], "completion_tokens": c["completion_tokens"],
            "wall_s": wall,
            "units_run": c["units_run"], "not_needed": c.get("units_not_needed"), "topups": c.get("units_topup"),
            **m.get("yield_figures", {}), "kept_per_1k_tokens": 1000 * c["kept"] / tokens if tokens else 0.0,
            "per_leaf": per_leaf, **extra}


def _same_mix_ratio(before: dict[str, tuple[int, int, int]], after: dict[str, tuple[int, int, int]]) -> float | None:
    """What after's kept samples would have cost at before's price per kept sample of their leaf kind, over what
    they cost: kept per token with the mix held fixed (a rule that stops the dear leaves short looks cheap in the
    run's mix). None when before kept nothing of a kind after kept."""
    at_before = spent = 0.0
    for kind, (kept, _, tokens) in after.items():
        b_kept, _, b_tokens = before.get(kind, (0, 0, 0))
        if kept and not b_kept:
            return None
        at_before += kept * (b_tokens / b_kept if b_kept else 0.0)
        spent += tokens
    return at_before / spent if spent else None


def _rejudged(run_dir: Path, manifest: dict, overrides: list[str]) -> dict[str, int]:
    """Leaf id -> how many of a run's kept rows (its generated_*/<leaf>.jsonl) today's quality stage keeps, with
    this config's quality settings and the taxonomy's seeds: a run of an older commit may predate seed-copy and
    near-duplicate removal, and a sample a run keeps now must pass them."""
    from sdg.config.compose import compose_config, to_object
    from sdg.quality.stage import stage_for
    from sdg.run import changed_leaves

    cfg = to_object(compose_config(overrides))
    stage = stage_for(cfg.quality, changed_leaves(cfg, log=lambda m: None))
    out = {}
    for leaf in manifest["leaves"]:
        rows = [json.loads(line) for path in run_dir.glob(f"generated_*/{leaf['name']}.jsonl")
                for line in path.read_text().splitlines() if line.strip()]
        out[leaf["id"]] = sum(1 for row in rows if stage is None or stage.offer(leaf["id"], row) is None)
    return out


def _per_leaf(run_dir: Path, manifest: dict) -> dict[str, tuple[int, int, int]]:
    """Leaf kind -> (kept, requests, prompt + completion tokens) from the manifest and the run's journals: the
    kinds cost very different amounts per sample (a knowledge prompt carries its chunk), so a rule that fills
    the dear leaves as well as the cheap ones is seen per leaf, not only in the run's mix."""
    from sdg.engine.journal import JournalStore

    store = JournalStore(run_dir / "journal")
    try:
        out = {}
        for leaf in manifest["leaves"]:
            recs = store.load(leaf["name"])
            kept, requests, tokens = out.get(leaf["kind"], (0, 0, 0))
            out[leaf["kind"]] = (kept + leaf["kept"], requests + sum(r.requests for r in recs),
                                 tokens + sum(r.prompt_tokens + r.completion_tokens for r in recs))
        return out
    finally:
        store.close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scale", type=int, default=2)
    ap.add_argument("--n-parallel", type=int, default=4)
    ap.add_argument("--max-tokens", type=int, default=512)
    ap.add_argument("--endpoint-url", default=None)
    ap.add_argument("--gguf", default="", help="serve this GGUF instead of the embedded SmolLM2-135M (e.g. the "
                    "Qwen2.5-Coder-0.5B that vs_instructlab.py assembles under ~/.cache/sdg-bench/)")
    ap.add_argument("--before-ref", default="", help="also run the code at this git ref (e.g. 141b5e1, the code "
                    "before issue 9's work) as a first phase, and print after / that")
    ap.add_argument("--max-load", type=float, default=1.2)
    ap.add_argument("--load-wait-s", type=float, default=300.0)
    ap.add_argument("--keep", default="", help="copy the runs' folders (taxonomy, outputs, teacher log) here")
    ap.add_argument("--taxonomy", choices=("knowledge-heavy", "example"), default="knowledge-heavy",
                    help="knowledge-heavy (the issue's: 3 knowledge leaves, a grounded and a freeform skill; "
                    "default) or example (sdg taxonomy init's: one leaf of each kind, the figures before 2026-12-03)")
    args = ap.parse_args(argv)

    wait_for_quiet(args.max_load, max_wait_s=args.load_wait_s)
    load_before = fmt_load()
    with tempfile.TemporaryDirectory(prefix="sdg-yield-") as d:
        tmp = Path(d)
        taxonomy = _taxonomy(args.taxonomy, tmp)
        phases: dict[str, dict] = {}
        if args.before_ref:
            source = _source_at(args.before_ref, tmp / "source-at-ref")
            phases[f"at {args.before_ref}"] = _phase(args, tmp, taxonomy, "ref", None, source)
        phases["before (leaf_targets=false)"] = _phase(args, tmp, taxonomy, "before", False)
        phases["after (leaf_targets=true)"] = _phase(args, tmp, taxonomy, "after", True)
        if args.keep:
            import shutil
            shutil.copytree(tmp, args.keep, dirs_exist_ok=True, ignore=shutil.ignore_patterns("source-at-ref"))
    model = Path(args.gguf).name if args.gguf else "embedded SmolLM2-135M"
    print(f"yield: {args.taxonomy} taxonomy, simple pipeline, scale {args.scale}, teacher "
          f"{args.endpoint_url or f'{model} on llama.cpp ({args.n_parallel} slots, 2 threads)'}, "
          f"max_tokens {args.max_tokens}; load {load_before} before, {fmt_load()} after")
    keys = ("kept", "kept_by_its_own_rules", "target", "units_run", "not_needed", "topups", "requests",
            "prompt_tokens", "completion_tokens",
            "kept_per_1k_tokens", "kept_per_1k_computed_tokens", "requests_per_kept", "completion_share_on_dropped",
            "prefix_cache_hit_rate", "wall_s")
    fmt = (lambda v: "-" if v is None else f"{v:.3f}" if isinstance(v, float) else str(v))
    print(f"  {'':28}" + "".join(f" {name:>28}" for name in phases))
    for k in keys:
        print(f"  {k:28}" + "".join(f" {fmt(ph.get(k)):>28}" for ph in phases.values()))
    print("  per leaf: kept / requests / tokens per kept sample")
    for kind in sorted({kind for ph in phases.values() for kind in ph["per_leaf"]}):
        cells = []
        for ph in phases.values():
            kept, requests, tokens = ph["per_leaf"].get(kind, (0, 0, 0))
            cells.append(f"{kept} / {requests} / {tokens / kept:.0f}" if kept else f"0 / {requests} / -")
        print(f"  {kind:28}" + "".join(f" {c:>28}" for c in cells))
    *earlier, a = phases.values()
    for name, b in zip(phases, earlier):
        print(f"  after / {name}:")
        same_mix = _same_mix_ratio(b["per_leaf"], a["per_leaf"])
        if same_mix is not None:
            print(f"    the same kept mix: after's kept samples priced at this phase's tokens per kept sample of each "
                  f"leaf kind, over what after spent: {same_mix:.2f}x")
        if b["kept_per_1k_tokens"]:
            print(f"    kept per 1k teacher tokens: {a['kept_per_1k_tokens'] / b['kept_per_1k_tokens']:.2f}x "
                  "(target >= 2x)")
        if b.get("kept_per_1k_computed_tokens") and a.get("kept_per_1k_computed_tokens"):
            print("    kept per 1k tokens the teacher computed (prompt tokens from its prefix cache left out): "
                  f"{a['kept_per_1k_computed_tokens'] / b['kept_per_1k_computed_tokens']:.2f}x")
        if b["kept"] and b["wall_s"]:
            print(f"    kept per second: {(a['kept'] / a['wall_s']) / (b['kept'] / b['wall_s']):.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
