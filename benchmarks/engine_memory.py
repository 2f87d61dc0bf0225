#!/usr/bin/env python3
"""Engine memory: peak RSS of a whole engine run at 1k units against 100k units (target: flat within 100 MB).

A program that prints figures, not a test. The teacher is bench_common.py's `ZeroLatencyStandIn`
(a zero-latency measuring instrument in its own process, pinned to CPU 1), so the runs are short and
only the engine's own memory is measured. Each size runs in a fresh child process (pinned to CPU 0) that
builds a synthetic plan over every leaf kind, loads the packaged simple pipelines and runs `run_plan`
inside the engine's own `engine_session` (a real `TeacherClient`), with a `JournalStore` (temp dir) and
`Progress(mode="none")`, exactly as dispatch_ceiling.py does. The child reads /proc/self/status: VmRSS
after start-up (imports, plan, pipelines: the baseline), VmRSS sampled every 0.25 s during the run (with
the units done), and VmHWM (the peak) at the end. Printed per size: baseline, peak, peak - baseline, RSS
at 10 %, 50 % and 100 % of the units and the growth per 10k units after the first 10 %; then the
difference of the peaks.

With --with-collect the child then also runs generate's next step, `collect_rows` + `write_outputs`
(quality counts, then every InstructLab file, one leaf's rows in memory at a time), and prints that peak
separately: it is not the engine, but it is what a 100k-unit `generate` does after the engine.

With --tracemalloc the child also traces Python allocations (much slower) and prints the 10 source lines
whose live memory grew most between 10 % of the units and the end: where a growth comes from.

    .venv/bin/python benchmarks/engine_memory.py                        # 1,000 and 100,000 units
    .venv/bin/python benchmarks/engine_memory.py --sizes 500,5000       # quick
    .venv/bin/python benchmarks/engine_memory.py --sizes 2000,20000 --tracemalloc
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parent.parent))

from bench_common import (ZeroLatencyStandIn, fmt_load, log_err, mb, pin_to, proc_status,  # noqa: E402
                          sigterm_as_interrupt, wait_for_quiet)

TARGET_MB = 100.0


def _child(n_units: int, base_url: str, concurrency: int, cpu: int | None, trace: bool,
           with_collect: bool = False) -> dict[str, Any]:
    pinned = pin_to(cpu)
    from dispatch_ceiling import engine_progress, load_pipelines, run_engine, synthetic_plan

    pipelines = load_pipelines("simple")
    plan, units = synthetic_plan(n_units)
    progress = engine_progress(plan, n_units)
    baseline = proc_status()
    samples: list[tuple[float, int, int]] = []  # (seconds, units done, VmRSS bytes)
    snaps: dict[str, Any] = {}
    if trace:
        import tracemalloc

        tracemalloc.start(8)

    async def sampler(t0: float) -> None:
        while True:
            done = progress.done_units
            samples.append((time.monotonic() - t0, done, proc_status().get("VmRSS", 0)))
            if trace and "early" not in snaps and done >= n_units // 10:
                import tracemalloc

                snaps["early"] = tracemalloc.take_snapshot()
            await asyncio.sleep(0.25)

    async def run(journal_dir: Path) -> Any:
        t0 = time.monotonic()
        task = asyncio.ensure_future(sampler(t0))
        try:
            return await run_engine(base_url, plan, units, n_units, pipelines, journal_dir, concurrency=concurrency,
                                    progress=progress)
        finally:
            task.cancel()
            samples.append((time.monotonic() - t0, progress.done_units, proc_status().get("VmRSS", 0)))

    with tempfile.TemporaryDirectory(prefix="sdg-bench-mem-") as tmp:
        stats = asyncio.run(run(Path(tmp)))
        journal_bytes = sum(p.stat().st_size for p in Path(tmp).rglob("*.jsonl"))
        end = proc_status()
        collect = None
        if with_collect:  # sdg.run.finish's first step: journals -> quality counts -> InstructLab files, leaf by leaf
            from sdg.engine.journal import JournalStore
            from sdg.output.instructlab import write_outputs
            from sdg.run import collect_rows

            t0 = time.monotonic()
            journals = JournalStore(Path(tmp))
            try:  # rows: by leaf id, read again per leaf when the writers ask; _quality: LeafQuality by leaf id
                rows, _quality = collect_rows(plan, journals)
                files = write_outputs(Path(tmp) / "out", "bench", [lp.leaf for lp in plan.leaves], rows,
                                      system_prompt="You are a helpful assistant.", seed=42)
            finally:
                journals.close()
            after = proc_status()
            collect = {"rows": files.train_rows, "s": time.monotonic() - t0,
                       "peak_rss": after.get("VmHWM", 0), "rss": after.get("VmRSS", 0)}
            del rows, _quality
    growth = None
    if trace:
        import tracemalloc

        final = tracemalloc.take_snapshot()
        _cur, peak_traced = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        if "early" in snaps:
            top = final.compare_to(snaps["early"], "lineno")[:10]
            growth = [f"{s.size_diff / 2**20:+8.2f} MB {s.count_diff:+8d} blocks  {s.traceback[0].filename}:"
                      f"{s.traceback[0].lineno}" for s in top]
        snaps["peak_traced"] = peak_traced

    def rss_at(frac: float) -> int:
        want = frac * n_units
        return next((rss for _, done, rss in samples if done >= want), samples[-1][2] if samples else 0)

    tail = [(done, rss) for _, done, rss in samples if done >= n_units // 10]
    slope = None
    if len(tail) >= 2 and tail[-1][0] > tail[0][0]:
        xs, ys = [d for d, _ in tail], [r for _, r in tail]
        mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
        var = sum((x - mx) ** 2 for x in xs)
        slope = (sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / var * 10_000) if var else None
    return {"units": n_units, "units_done": stats.units_done, "requests": stats.requests, "failed": stats.units_failed,
            "engine_s": stats.elapsed_s, "pinned": pinned, "baseline_rss": baseline.get("VmRSS", 0),
            "peak_rss": end.get("VmHWM", 0), "end_rss": end.get("VmRSS", 0),
            "rss_10": rss_at(0.1), "rss_50": rss_at(0.5), "rss_100": rss_at(1.0),
            "growth_per_10k_units": slope, "samples": len(samples), "journal_bytes": journal_bytes,
            "tracemalloc_peak": snaps.get("peak_traced"), "tracemalloc_growth": growth, "collect": collect}


def run_child(n_units: int, base_url: str, args: argparse.Namespace) -> dict[str, Any]:
    argv = [sys.executable, str(Path(__file__).resolve()), "--child", str(n_units), "--url", base_url,
            "--concurrency", str(args.concurrency), "--engine-cpu", str(args.engine_cpu)]
    if args.tracemalloc:
        argv.append("--tracemalloc")
    if args.with_collect:
        argv.append("--with-collect")
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = proc.communicate()
    except BaseException:  # interrupted: the child must not run on
        proc.kill()
        proc.wait()
        raise
    for line in out.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    raise RuntimeError(f"the {n_units}-unit child failed (exit {proc.returncode}):\n{err[-3000:]}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="1000,100000", help="comma-separated unit counts (first = the small one)")
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--engine-cpu", type=int, default=0)
    ap.add_argument("--stand-in-cpu", type=int, default=1)
    ap.add_argument("--tracemalloc", action="store_true", help="trace Python allocations (slow) and list growth")
    ap.add_argument("--with-collect", action="store_true",
                    help="after the engine, also run generate's collect_rows + write_outputs (one leaf at a time) "
                         "and report its peak separately")
    ap.add_argument("--max-load", type=float, default=1.2, help="wait for the 1-min load average below this (0: off)")
    ap.add_argument("--load-wait-s", type=float, default=600.0)
    ap.add_argument("--json", metavar="OUT")
    ap.add_argument("--child", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--url", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    cpu = args.engine_cpu if args.engine_cpu >= 0 else None
    if args.child:
        res = _child(args.child, args.url, args.concurrency, cpu, args.tracemalloc, args.with_collect)
        print("RESULT " + json.dumps(res), flush=True)
        return 0
    sigterm_as_interrupt()

    sizes = [int(s) for s in args.sizes.split(",")]
    results = []
    standin = ZeroLatencyStandIn(cpu=args.stand_in_cpu if args.stand_in_cpu >= 0 else None)
    with standin as base_url:
        print(f"teacher: {standin.name} (a zero-latency measuring instrument, not a model) at {base_url}, "
              f"{standin.pinned}; {args.concurrency} in flight" + ("; tracemalloc on" if args.tracemalloc else ""),
              flush=True)
        for n in sizes:
            gate = wait_for_quiet(args.max_load, max_wait_s=args.load_wait_s)
            log_err(f"running {n} units (load {fmt_load(gate['load'])})")
            r = run_child(n, base_url, args)
            r["load_before"] = gate["load"]
            results.append(r)
            slope = f"{r['growth_per_10k_units'] / 2**20:+.2f} MB" if r["growth_per_10k_units"] is not None else "-"
            print(f"{n:>7} units: {r['requests']} requests in {r['engine_s']:.1f} s ({r['pinned']}); baseline "
                  f"{mb(r['baseline_rss'])}, peak {mb(r['peak_rss'])} (+{mb(r['peak_rss'] - r['baseline_rss'])}); "
                  f"RSS at 10/50/100 %: {mb(r['rss_10'])} / {mb(r['rss_50'])} / {mb(r['rss_100'])}; growth per 10k "
                  f"units after 10 %: {slope}; journals {mb(r['journal_bytes'])} on disk; load before "
                  f"{fmt_load(r['load_before'])}", flush=True)
            if r["collect"]:
                c = r["collect"]
                print(f"  then collect_rows + write_outputs (generate's next step, not the engine): {c['rows']} train rows "
                      f"in {c['s']:.1f} s, "
                      f"peak RSS {mb(c['peak_rss'])} (+{mb(c['peak_rss'] - r['peak_rss'])} over the engine's peak)")
            if r["tracemalloc_growth"]:
                print(f"  tracemalloc peak {mb(r['tracemalloc_peak'] or 0)}; live memory growth, 10 % -> end:")
                for line in r["tracemalloc_growth"]:
                    print(f"    {line}")
    small, large = results[0], results[-1]
    diff = large["peak_rss"] - small["peak_rss"]
    verdict = "flat: meets" if diff / 2**20 <= TARGET_MB else "GROWS: misses"
    print(f"peak RSS {large['units']} units - peak RSS {small['units']} units = {mb(diff)} ({verdict} the target of "
          f"{TARGET_MB:.0f} MB)")
    print(f"{standin.name} answered {standin.served} chat completions in all")
    if args.json:
        Path(args.json).write_text(json.dumps({"results": results, "peak_diff_bytes": diff}, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
