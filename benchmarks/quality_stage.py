#!/usr/bin/env python3
"""The run-wide quality stage (sdg.quality): rows/s on one core, memory growth, near-duplicate recall and
precision, and the MinHash + LSH libraries it could use (datasketch against rensa) on the same rows.

A program that prints figures, not a test. Rows are synthetic (sdg.quality.planted.TextMaker: a question of
about 15 words, an answer of about 60 in five sentences, pseudo-words Zipf-weighted, 200 topics), generated
in chunks outside the timed region and never all held at once. The stream plants what the stage removes:
exact copies with other case and punctuation (--exact-rate), near copies (--near-rate, shingle Jaccard >=
0.85 to a recent row), copies of the leaf's seeds (--seed-rate) and rows quoting an evaluation set item
(--contaminated-rate). Every leaf has --seeds seed examples; the evaluation set (--eval-items items, .jsonl
in a temp dir) is loaded by the stage as `quality.decontaminate` says it would be. All four filters are on.
Rows come in runs from one leaf (--leaf-run, mean 20: a unit's rows), 1,000 leaves.

(a) The whole stage: `QualityStage.offer` on --rows rows (default 1,000,000), pinned to one CPU; rows/s
    of wall time, CPU seconds / wall seconds (the share of one core), and VmRSS (/proc/self/status) before
    the first row, at 10/50/100 % and the peak (VmHWM): growth and bytes per kept row. RSS, not tracemalloc:
    rensa allocates in Rust, which tracemalloc cannot see.
(b) MinHash + LSH alone, datasketch against rensa, on the same rows (--compare-rows, default 50,000) and the
    same bands, shingles prepared outside the timing, each library in a child process of its own (so the
    RSS growth is its alone): MinHash creation, LSH query + insert, RSS growth per row (index and kept
    signatures), and recall/precision of each on the planted corpus with the same confirm rule (estimated
    Jaccard >= threshold). Skipped for a library that is not installed.
(c) Near-duplicate recall and precision of the whole stage on sdg.quality.planted.planted_corpus (2,000
    base rows, 500 planted near copies, 200 same-topic siblings that must be kept).

    .venv/bin/python benchmarks/quality_stage.py                     # 1,000,000 rows
    .venv/bin/python benchmarks/quality_stage.py --rows 100000       # quick
    .venv/bin/python benchmarks/quality_stage.py --rows 100000 --profile   # + cProfile of 20,000 rows

Last figures (2-core dev machine shared with other work, one core pinned, 2026-12-01; 1-min load 1.0-1.7):
1,000,000 rows: 20,090 rows/s, 98 % of one core; RSS +2.87 GB at 1M rows (3.3 KB per kept row; 2.2-2.3 KB
per kept row at 100,000 rows: rensa's hash tables grow by doubling). 100,000 rows: 20,300-24,000 rows/s.
MinHash + LSH alone: rensa 170,000 rows/s and 2.0 KB/row, datasketch 4,200 rows/s and 8.0 KB/row (41x).
Planted corpus: recall 0.996, precision 1.000 (datasketch, same bands and confirm rule: 0.988, 1.000).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parent.parent))

from bench_common import fmt_load, mb, pin_to, proc_status, wait_for_quiet  # noqa: E402

from sdg.config.schema import QualityConfig  # noqa: E402
from sdg.quality import QualityStage  # noqa: E402
from sdg.quality.near import SEED, bands_for  # noqa: E402
from sdg.quality.planted import TextMaker, near_copy, planted_corpus  # noqa: E402
from sdg.quality.text import words  # noqa: E402

TARGET_ROWS_S = 20_000
CHUNK = 10_000


# --------------------------------------------------------------------------------------------------------
# The synthetic stream
# --------------------------------------------------------------------------------------------------------

class Stream:
    """Leaves with seeds, an evaluation set, and a row stream with planted drops (deterministic by seed)."""

    def __init__(self, args: argparse.Namespace, seed: int = 1) -> None:
        self.args = args
        self.maker = TextMaker(seed)
        rng = self.maker.rng
        self.leaves = [f"skills/leaf{i:04d}" for i in range(args.leaves)]
        self.topic = {leaf: rng.randrange(len(self.maker.topics)) for leaf in self.leaves}
        self.seeds = {leaf: [_joined(self.maker.row(self.topic[leaf])) for _ in range(args.seeds)]
                      for leaf in self.leaves}
        self.eval_items = [self.maker.row(rng.randrange(len(self.maker.topics))) for _ in range(args.eval_items)]

    def write_eval_set(self, folder: Path) -> Path:
        path = folder / "evalset.jsonl"
        with path.open("w", encoding="utf-8") as f:
            for item in self.eval_items:
                f.write(json.dumps({"question": item["question"], "answer": item["response"]}) + "\n")
        return path

    def chunks(self, n: int) -> Iterator[list[tuple[str, dict[str, str]]]]:
        a, rng, maker = self.args, self.maker.rng, self.maker
        recent: list[dict[str, str]] = []
        done = 0
        leaf = rng.choice(self.leaves)
        while done < n:
            chunk = []
            for _ in range(min(CHUNK, n - done)):
                if rng.random() * a.leaf_run < 1:  # a run's rows come unit by unit, a unit's rows in one leaf
                    leaf = rng.choice(self.leaves)
                topic = self.topic[leaf]
                x = rng.random()
                if recent and x < a.exact_rate:
                    src = rng.choice(recent)
                    row = {"question": src["question"].upper(), "response": src["response"].replace(".", " !")}
                elif recent and x < a.exact_rate + a.near_rate:
                    row = near_copy(rng.choice(recent), maker, topic)
                elif a.seeds and x < a.exact_rate + a.near_rate + a.seed_rate:
                    q, _, ans = rng.choice(self.seeds[leaf]).partition("\n")
                    row = {"question": q, "response": ans.replace(".", ",", 1)}
                elif self.eval_items and x < a.exact_rate + a.near_rate + a.seed_rate + a.contaminated_rate:
                    item = rng.choice(self.eval_items)["response"].split()
                    row = maker.row(topic)
                    row["response"] += " " + " ".join(item[10:30])
                else:
                    row = maker.row(topic)
                    if len(recent) < 1000:
                        recent.append(row)
                    else:
                        recent[rng.randrange(1000)] = row
                row["context"] = "a shared chunk of a knowledge document, not compared " * 20
                chunk.append((leaf, row))
            done += len(chunk)
            yield chunk


def _joined(row: dict[str, str]) -> str:
    return f"{row['question']}\n{row['response']}"


# --------------------------------------------------------------------------------------------------------
# (a) the whole stage
# --------------------------------------------------------------------------------------------------------

def bench_stage(args: argparse.Namespace) -> dict[str, Any]:
    stream = Stream(args)
    with tempfile.TemporaryDirectory(prefix="sdg-bench-quality-") as tmp:
        evals = [str(stream.write_eval_set(Path(tmp)))] if args.eval_items else []
        cfg = QualityConfig(decontaminate=evals)
        t0 = time.perf_counter()
        stage = QualityStage(cfg, seeds=stream.seeds)
        load_s = time.perf_counter() - t0
    gc.collect()
    base = proc_status().get("VmRSS", 0)
    reasons: dict[str, int] = {}
    wall = cpu = 0.0
    marks: dict[int, int] = {}
    done = 0
    for chunk in stream.chunks(args.rows):
        w0, c0 = time.perf_counter(), time.process_time()
        for leaf, row in chunk:
            d = stage.offer(leaf, row)
            if d is not None:
                reasons[d.reason] = reasons.get(d.reason, 0) + 1
        wall += time.perf_counter() - w0
        cpu += time.process_time() - c0
        done += len(chunk)
        for pct in (10, 50, 100):
            if pct not in marks and done >= args.rows * pct // 100:
                marks[pct] = proc_status().get("VmRSS", 0)
    del chunk
    end = proc_status()
    kept = args.rows - sum(reasons.values())
    return {"rows": args.rows, "wall_s": wall, "cpu_s": cpu, "rows_s": args.rows / wall, "load_s": load_s,
            "reasons": reasons, "kept": kept, "rss_base": base, "rss": marks, "peak": end.get("VmHWM", 0),
            "contamination": stage.contamination}


# --------------------------------------------------------------------------------------------------------
# (b) datasketch vs rensa, MinHash + LSH alone
# --------------------------------------------------------------------------------------------------------

def _shingles(row: dict[str, str], k: int = 3) -> list[str]:
    ws = words(row["question"]) + words(row["response"])
    return [" ".join(ws[i:i + k]) for i in range(len(ws) - k + 1)]


class _Rensa:
    name = "rensa"

    def __init__(self, threshold: float, num_perm: int, bands: int) -> None:
        from rensa import RMinHash, RMinHashLSH
        self.mk, self.num_perm = RMinHash, num_perm
        self.lsh = RMinHashLSH(threshold, num_perm, bands)
        self.sigs: list[Any] = []

    def sketch(self, shingles: list[str]) -> Any:
        mh = self.mk(self.num_perm, SEED)
        mh.update(shingles)
        return mh

    def query_insert(self, mh: Any, threshold: float) -> bool:
        dup = any(mh.jaccard(self.sigs[k]) >= threshold for k in self.lsh.query(mh))
        if not dup:
            self.lsh.insert(len(self.sigs), mh)
            self.sigs.append(mh)
        return dup


class _Datasketch:
    name = "datasketch"

    def __init__(self, threshold: float, num_perm: int, bands: int) -> None:
        from datasketch import MinHash, MinHashLSH
        self.mk, self.num_perm = MinHash, num_perm
        self.lsh = MinHashLSH(threshold=threshold, num_perm=num_perm, params=(bands, num_perm // bands))
        self.sigs: list[Any] = []

    def sketch(self, shingles: list[str]) -> Any:
        mh = self.mk(num_perm=self.num_perm, seed=SEED)
        mh.update_batch([s.encode() for s in shingles])
        return mh

    def query_insert(self, mh: Any, threshold: float) -> bool:
        dup = any(mh.jaccard(self.sigs[k]) >= threshold for k in self.lsh.query(mh))
        if not dup:
            self.lsh.insert(len(self.sigs), mh)
            self.sigs.append(mh)
        return dup


def lib_child(args: argparse.Namespace) -> dict[str, Any]:
    """One library, in a process of its own (so RSS growth is its alone): sketch the rows, then query + insert
    each (confirming candidates by estimated Jaccard), then the planted corpus for recall/precision."""
    lib = {"rensa": _Rensa, "datasketch": _Datasketch}[args.lib_child]
    cfg = QualityConfig()
    bands = bands_for(cfg.near_dedup_threshold, cfg.near_dedup_num_perm)
    try:
        idx = lib(cfg.near_dedup_threshold, cfg.near_dedup_num_perm, bands)
    except ImportError:
        return {"lib": lib.name, "missing": True}
    stream = Stream(replace_args(args, seeds=0, eval_items=0), seed=2)
    shingles = [_shingles(row) for chunk in stream.chunks(args.compare_rows) for _, row in chunk]
    gc.collect()
    rss0 = proc_status().get("VmRSS", 0)
    t0 = time.perf_counter()
    sigs = [idx.sketch(s) for s in shingles]
    t1 = time.perf_counter()
    for mh in sigs:
        idx.query_insert(mh, cfg.near_dedup_threshold)
    t2 = time.perf_counter()
    del sigs
    gc.collect()
    per_row = (proc_status().get("VmRSS", 0) - rss0) / len(shingles)
    planted = planted_corpus()
    idx = lib(cfg.near_dedup_threshold, cfg.near_dedup_num_perm, bands)
    flags = [idx.query_insert(idx.sketch(_shingles(p.row)), cfg.near_dedup_threshold) for p in planted]
    rec, prec = _recall_precision([p.kind for p in planted], flags)
    return {"lib": lib.name, "rows": len(shingles), "sketch_us": (t1 - t0) / len(shingles) * 1e6,
            "lsh_us": (t2 - t1) / len(shingles) * 1e6, "bytes_per_row": per_row, "recall": rec, "precision": prec}


def bench_libraries(args: argparse.Namespace) -> list[dict[str, Any]]:
    out = []
    for name in ("rensa", "datasketch"):
        argv = [sys.executable, str(Path(__file__).resolve()), "--lib-child", name, "--compare-rows",
                str(args.compare_rows), "--cpu", str(args.cpu)]
        proc = subprocess.run(argv, capture_output=True, text=True)
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
        if proc.returncode or not lines:
            raise RuntimeError(f"the {name} child failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
        res = json.loads(lines[-1][7:])
        if res.get("missing"):
            print(f"    {name}: not installed, skipped")
        else:
            out.append(res)
    return out


def replace_args(args: argparse.Namespace, **kw: Any) -> argparse.Namespace:
    return argparse.Namespace(**{**vars(args), **kw})


# --------------------------------------------------------------------------------------------------------
# (c) recall / precision on the planted corpus
# --------------------------------------------------------------------------------------------------------

def _recall_precision(kinds: list[str], dropped: list[bool]) -> tuple[float, float]:
    planted = sum(k == "near" for k in kinds)
    hits = sum(d and k == "near" for k, d in zip(kinds, dropped))
    drops = sum(dropped)
    return hits / planted if planted else 1.0, hits / drops if drops else 1.0


def bench_planted() -> dict[str, Any]:
    corpus = planted_corpus()
    stage = QualityStage(QualityConfig())
    drops = [stage.offer(p.leaf, p.row) for p in corpus]
    near = [d is not None and d.reason == "near_duplicate" for d in drops]
    rec, prec = _recall_precision([p.kind for p in corpus], near)
    other = sum(d is not None and d.reason != "near_duplicate" for d in drops)
    return {"rows": len(corpus), "near": sum(p.kind == "near" for p in corpus), "recall": rec, "precision": prec,
            "other_drops": other}


# --------------------------------------------------------------------------------------------------------

def _profile(args: argparse.Namespace) -> None:
    import cProfile
    import pstats

    stream = Stream(replace_args(args, rows=20_000))
    with tempfile.TemporaryDirectory(prefix="sdg-bench-quality-") as tmp:
        evals = [str(stream.write_eval_set(Path(tmp)))] if args.eval_items else []
        stage = QualityStage(QualityConfig(decontaminate=evals), seeds=stream.seeds)
    rows = [r for chunk in stream.chunks(20_000) for r in chunk]
    prof = cProfile.Profile()
    prof.enable()
    for leaf, row in rows:
        stage.offer(leaf, row)
    prof.disable()
    pstats.Stats(prof).sort_stats("tottime").print_stats(15)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--leaves", type=int, default=1000)
    ap.add_argument("--seeds", type=int, default=5, help="seed examples per leaf")
    ap.add_argument("--leaf-run", type=float, default=20.0,
                    help="mean rows in a row from one leaf (a unit's rows; 1: every row from a random leaf)")
    ap.add_argument("--eval-items", type=int, default=5000, help="items of the evaluation set (0: none)")
    ap.add_argument("--exact-rate", type=float, default=0.02)
    ap.add_argument("--near-rate", type=float, default=0.02)
    ap.add_argument("--seed-rate", type=float, default=0.005)
    ap.add_argument("--contaminated-rate", type=float, default=0.005)
    ap.add_argument("--compare-rows", type=int, default=50_000, help="rows of the datasketch/rensa comparison")
    ap.add_argument("--cpu", type=int, default=0, help="pin to this CPU (-1: not pinned)")
    ap.add_argument("--skip", default="", help="comma-separated parts to skip: stage,libraries,planted")
    ap.add_argument("--profile", action="store_true", help="also cProfile 20,000 rows and print the top costs")
    ap.add_argument("--max-load", type=float, default=1.2, help="wait for the 1-min load average below this (0: off)")
    ap.add_argument("--load-wait-s", type=float, default=300.0)
    ap.add_argument("--lib-child", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.lib_child:
        pin_to(args.cpu if args.cpu >= 0 else None)
        print("RESULT " + json.dumps(lib_child(args)), flush=True)
        return 0
    skip = set(filter(None, args.skip.split(",")))
    pinned = pin_to(args.cpu if args.cpu >= 0 else None)
    print(f"quality stage benchmark: {args.rows:,} rows, {args.leaves} leaves x {args.seeds} seeds, evaluation set "
          f"of {args.eval_items} items; {pinned}; pid {os.getpid()}", flush=True)

    if "stage" not in skip:
        gate = wait_for_quiet(args.max_load, max_wait_s=args.load_wait_s)
        r = bench_stage(args)
        after = fmt_load()
        rss = r["rss"]
        growth = r["peak"] - r["rss_base"]
        print(f"(a) whole stage: {r['rows_s']:,.0f} rows/s ({r['rows']:,} rows in {r['wall_s']:.1f} s, target "
              f"{TARGET_ROWS_S:,}: {'met' if r['rows_s'] >= TARGET_ROWS_S else 'NOT met'}); CPU {r['cpu_s']:.1f} s = "
              f"{r['cpu_s'] / r['wall_s']:.0%} of one core; evaluation set loaded in {r['load_s']:.2f} s", flush=True)
        print(f"    drops: {json.dumps(r['reasons'], sort_keys=True)}, kept {r['kept']:,}; contamination "
              f"{json.dumps(r['contamination'])}")
        print(f"    VmRSS before the first row {mb(r['rss_base'])}; at 10/50/100 %: "
              f"{' / '.join(mb(rss[p]) for p in (10, 50, 100))}; peak {mb(r['peak'])} (+{mb(growth)}, "
              f"{(rss[100] - rss[10]) / max(1, r['kept'] * 0.9):,.0f} bytes per kept row after 10 %)")
        print(f"    load (1/5/15 min) before {fmt_load(gate['load'])}, after {after}", flush=True)

    if "libraries" not in skip:
        gate = wait_for_quiet(args.max_load, max_wait_s=args.load_wait_s)
        res = bench_libraries(args)
        print(f"(b) MinHash + LSH alone, {args.compare_rows:,} rows, 128 permutations, "
              f"{bands_for(0.8, 128)} bands (load before {fmt_load(gate['load'])}, after {fmt_load()}):")
        for x in res:
            total = x["sketch_us"] + x["lsh_us"]
            print(f"    {x['lib']:<10} MinHash {x['sketch_us']:7.1f} us/row, LSH query+insert {x['lsh_us']:5.1f} "
                  f"us/row, together {1e6 / total:>9,.0f} rows/s; RSS {x['bytes_per_row']:,.0f} bytes/row; planted "
                  f"recall {x['recall']:.3f}, precision {x['precision']:.3f}")
        if len(res) == 2:
            a, b = res
            ta, tb = a["sketch_us"] + a["lsh_us"], b["sketch_us"] + b["lsh_us"]
            print(f"    {a['lib']} / {b['lib']} speed: {tb / ta:.1f}x", flush=True)

    if "planted" not in skip:
        p = bench_planted()
        print(f"(c) planted corpus ({p['rows']:,} rows, {p['near']} planted near copies): near-duplicate recall "
              f"{p['recall']:.3f}, precision {p['precision']:.3f}; other drops {p['other_drops']}; load {fmt_load()}")

    if args.profile:
        _profile(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
