#!/usr/bin/env python3
"""Does a real `generate` keep the teacher saturated? Engine output tok/s over the teacher's saturated tok/s.

A program that prints figures, not a test. In ONE run, on the same server configuration (the embedded
SmolLM2-135M on llama.cpp, `--n-parallel` slots, 2 threads, started afresh for each phase so that no phase
profits from prompt prefixes another left in the server's slots; or `--endpoint-url`, one server for all):

(a) the teacher's saturated output tok/s, measured with `teacher_saturation.measure_saturation` (a fixed
    generation prompt, max_tokens 256, concurrency 1, 2, 4, ... until it stops rising);
(b) a real `sdg.run.generate(cfg)` on the example taxonomy (`init_taxonomy` in a temp dir,
    `taxonomy.base=empty`, simple pipeline, the smallest scale factor (a multiple of 5) giving at least
    `--min-units` units, the same server as an endpoint, teacher.max_tokens 256, generate.max_concurrency =
    the concurrency that saturated the teacher in (a), or `--engine-concurrency 2x-slots` / N);

(c) unless --no-replay: the very requests the engine sent (rebuilt from the plan by running each unit's
    pipeline with a recording chat function: same prompts, seeds and max_tokens, same order), replayed
    through a plain httpx client at the same concurrency: the teacher's saturated rate on the engine's own
    workload, the fair denominator (a fixed prompt repeated in (a) is prefilled once and then served from
    the slot's cache, so (a) is nearly decode-only while a real run's prompts are all new);

then reads the run's manifest.json (`timings.engine_s`, `counts.completion_tokens`, `timings.output_tok_s`)
and prints

- ratio = engine output tok/s / saturated tok/s (target >= 0.90), with both figures. The engine figure
  counts completion tokens over the whole engine time, the drain at the end included (the last units
  run with fewer requests in flight than the teacher could take);
- the steady ratio: from the per-leaf journals (each record has `t`, its completion time, and its
  `completion_tokens`), the engine's rate between the c-th completion and the last completion before
  fewer than c units were left (c = max_concurrency: every worker busy), over the teacher's steady
  rate measured the same way in (a);
- the mean prompt tokens per request of both (the example taxonomy's knowledge prompts carry a
  document chunk, so the teacher spends more time on prompts in (b) than in (a));
- engine/replay: the engine's rate over the plain client's on the same requests, i.e. what the engine
  itself costs with the workload held equal, and replay/saturated: what the workload's longer prompts
  and shorter replies cost the teacher with no engine involved.

    .venv/bin/python benchmarks/generate_saturation.py                  # embedded teacher, >= 60 units
    .venv/bin/python benchmarks/generate_saturation.py --min-units 20 --target-s 6 --max-concurrency 8   # quick

Before measuring it waits (up to --load-wait-s) for the 1-minute load average to drop below --max-load.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parent.parent))

from bench_common import fmt_load, loadavg, log_err, sigterm_as_interrupt, wait_for_quiet  # noqa: E402
from teacher_saturation import (add_saturation_args, add_server_args, embedded_teacher, format_summary,  # noqa: E402
                                format_table, measure_saturation, run_requests, saturation_kwargs, steady_rate)

TARGET = 0.90


def _q(value: str) -> str:
    """A Hydra override value, quoted so URLs and paths stay literal."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def overrides(tmp: Path, taxonomy: Path, base_url: str, *, scale: int, concurrency: int, max_tokens: int,
              model: str, api_key: str | None, dry_run: bool = False) -> list[str]:
    out = [f"taxonomy.path={_q(str(taxonomy))}", "taxonomy.base=empty",
           f"taxonomy.documents.cache_dir={_q(str(tmp / 'documents'))}",
           "teacher=endpoint", "teacher.backend=endpoint", f"teacher.endpoint_url={_q(base_url)}",
           f"teacher.served_model_name={_q(model)}", f"teacher.max_tokens={max_tokens}",
           f"teacher.log_dir={_q(str(tmp / 'logs'))}",
           "pipeline=simple", f"pipeline.sdg_scale_factor={scale}",
           f"generate.max_concurrency={concurrency}", f"generate.output_dir={_q(str(tmp / 'out'))}",
           "generate.progress=log", "generate.progress_interval_s=15"]
    if api_key:
        out.append(f"teacher.api_key={_q(api_key)}")
    if dry_run:
        out.append("generate.dry_run=true")
    return out


def pick_scale(tmp: Path, taxonomy: Path, base_url: str, min_units: int, **kw: Any) -> tuple[int, int]:
    """The smallest scale factor (a multiple of samples_per_unit=5) whose plan has >= min_units units."""
    from sdg.config.compose import compose_config, to_object
    from sdg.run import generate

    scale = 5
    while True:
        cfg = to_object(compose_config(overrides(tmp, taxonomy, base_url, scale=scale, dry_run=True, **kw)))
        units = generate(cfg, log=lambda m: None).plan.units
        if units >= min_units or scale >= 1000:
            return scale, units
        scale += 5


def engine_requests(plan: Any, pipelines: dict[str, Any], cap: int) -> list[dict[str, Any]]:
    """The chat requests the engine sent, rebuilt by running each unit's pipeline with a chat function that
    records the call and answers "failed" (the simple pipeline makes exactly one teacher call per unit, so
    its first calls are all of them), in the engine's dispatch order, with the engine's max_tokens cap."""
    from sdg.pipeline.types import UnitContext

    bodies: list[dict[str, Any]] = []

    class _Recorded:
        ok, kind, message, prompt_tokens, completion_tokens = False, "recorded", "recorded", 0, 0

    async def record(messages: list[dict], *, max_tokens: int, temperature: float = 0.7, seed: int | None = None,
                     stop: list[str] | None = None, **extra: Any) -> Any:
        body = {"messages": messages, "max_tokens": min(max_tokens, cap), "temperature": temperature, **extra}
        if seed is not None:
            body["seed"] = seed
        if stop:
            body["stop"] = list(stop)
        bodies.append(body)
        return _Recorded()

    async def rebuild() -> None:
        for unit in plan.iter_units():
            ctx = UnitContext(chat=record, seed=unit.seed, leaf_id=unit.leaf_id, unit_id=unit.id)
            kind = next(lp.kind for lp in plan.leaves if lp.leaf.id == unit.leaf_id)
            await pipelines[kind].run(unit.row, ctx)

    asyncio.run(rebuild())
    return bodies


def journal_records(run_dir: Path) -> list[dict[str, Any]]:
    out = []
    for path in sorted((run_dir / "journal").glob("*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                rec = json.loads(line)
                out.append({"t": float(rec["t"]), "completion_tokens": int(rec.get("completion_tokens", 0)),
                            "requests": int(rec.get("requests", 0)), "status": rec.get("status")})
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_server_args(ap)
    add_saturation_args(ap)
    ap.add_argument("--min-units", type=int, default=60, help="the scale factor is chosen to give at least this many")
    ap.add_argument("--scale", type=int, default=None, help="use this scale factor instead")
    ap.add_argument("--engine-concurrency", default="saturating",
                    help="generate.max_concurrency: 'saturating' (from (a)), '2x-slots', or a number")
    ap.add_argument("--no-replay", action="store_true",
                    help="skip (c): replaying the engine's own requests through a plain client")
    ap.add_argument("--keep", metavar="DIR", help="keep the taxonomy and the run folder in DIR")
    ap.add_argument("--json", metavar="OUT", help="write the figures as JSON here")
    args = ap.parse_args(argv)
    sigterm_as_interrupt()

    gate = wait_for_quiet(args.max_load, max_wait_s=args.load_wait_s)
    print(f"load average before: {fmt_load(gate['load'])} (waited {gate['waited_s']:.0f} s)", flush=True)
    with contextlib.ExitStack() as stack:
        if args.keep:
            tmp = Path(args.keep).resolve()
            tmp.mkdir(parents=True, exist_ok=True)
        else:
            tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="sdg-bench-generate-")))
        if args.endpoint_url:
            endpoint = args.endpoint_url.rstrip("/")
            endpoint = endpoint if endpoint.endswith("/v1") else endpoint + "/v1"
            where, slots = f"endpoint {endpoint} (one server for every phase: its prompt cache is shared)", None
        else:
            endpoint, slots = None, args.n_parallel
            where = (f"embedded SmolLM2-135M on llama.cpp ({args.n_parallel} slots, {args.threads} threads), "
                     "a fresh server per phase")

        @contextlib.contextmanager
        def serve(phase: str) -> Iterator[str]:
            """A fresh embedded server per phase: llama.cpp reuses a slot's cached prompt prefix, so a phase
            run after another on the same server skips prefill the other paid for (measured: the replay
            evaluated 6.8k prompt tokens where the engine, first, evaluated 17.2k for the same requests)."""
            if endpoint:
                yield endpoint
                return
            with embedded_teacher(n_parallel=args.n_parallel, n_threads=args.threads,
                                  context_length=args.context_length, log_dir=tmp / f"teacher-{phase}") as ep:
                yield ep.base_url

        # (a) the teacher alone
        print(f"teacher: {where}", flush=True)
        with serve("a") as base_url:
            sat = measure_saturation(base_url, **saturation_kwargs(args))
        print(format_table(sat))
        print(format_summary(sat), flush=True)

        # (b) a real generate against the same server
        if args.engine_concurrency == "saturating":
            conc = int(sat["saturated_concurrency"] or 1)
        elif args.engine_concurrency == "2x-slots":
            if not slots:
                ap.error("--engine-concurrency 2x-slots needs the embedded teacher (slots unknown for an endpoint)")
            conc = 2 * slots
        else:
            conc = int(args.engine_concurrency)
        from sdg.config.compose import compose_config, to_object
        from sdg.run import generate
        from sdg.taxonomy.init import init_taxonomy

        taxonomy = init_taxonomy(tmp / "taxonomy").path
        kw = dict(concurrency=conc, max_tokens=args.max_tokens, model=args.model, api_key=args.api_key)
        if args.scale:
            scale, units = args.scale, None
        else:
            scale, units = pick_scale(tmp, taxonomy, base_url, args.min_units, **kw)
        print(f"\ngenerate: example taxonomy, simple pipeline, scale factor {scale} ({units} units), "
              f"max_concurrency {conc}, teacher.max_tokens {args.max_tokens}", flush=True)
        with serve("b") as base_url:
            cfg = to_object(compose_config(overrides(tmp, taxonomy, base_url, scale=scale, **kw)))
            load_gen_before = loadavg()
            t0 = time.monotonic()
            result = generate(cfg, log=log_err)
            gen_wall = time.monotonic() - t0
            load_gen_after = loadavg()
        manifest = json.loads((result.run_dir / "manifest.json").read_text(encoding="utf-8"))
        records = journal_records(result.run_dir)

        # (c) the same requests the engine sent, through a plain httpx client at the same concurrency
        replay = None
        if not args.no_replay:
            from sdg.run import load_pipelines

            pipelines = load_pipelines(cfg, {lp.kind for lp in result.plan.leaves})
            bodies = engine_requests(result.plan, pipelines, cfg.teacher.max_tokens)
            print(f"\nreplay: the engine's {len(bodies)} requests through a plain httpx client, {conc} at a time",
                  flush=True)
            with serve("c") as base_url:
                replay = asyncio.run(run_requests(base_url, conc, bodies, model=args.model, api_key=args.api_key))
            replay["load_after"] = loadavg()

    timings, counts = manifest["timings"], manifest["counts"]
    engine_tok_s = float(timings["output_tok_s"])
    ratio = engine_tok_s / sat["saturated_tok_s"] if sat["saturated_tok_s"] else float("nan")
    steady = steady_rate([(r["t"], r["completion_tokens"]) for r in records], conc)
    steady_ratio = (steady["tok_s"] / sat["saturated_steady_tok_s"]
                    if steady and sat["saturated_steady_tok_s"] else None)
    same_level = next((lvl for lvl in sat["levels"] if lvl["concurrency"] == conc), None)
    prompt_per_req = counts["prompt_tokens"] / counts["requests"] if counts["requests"] else 0.0
    tok_per_req = counts["completion_tokens"] / counts["requests"] if counts["requests"] else 0.0

    print("\n=== generate vs saturated teacher ===")
    print(f"teacher: {where}")
    print(f"engine:   {counts['units_run']} units ({counts['units_failed']} failed), {counts['requests']} requests, "
          f"{counts['completion_tokens']} completion tokens in {timings['engine_s']:.1f} s engine time "
          f"(generate() wall {gen_wall:.1f} s) = {engine_tok_s:.1f} tok/s; {tok_per_req:.0f} tokens and "
          f"{prompt_per_req:.0f} prompt tokens per request; max_concurrency {conc}")
    print(f"teacher:  saturated {sat['saturated_tok_s']:.1f} tok/s at concurrency {sat['saturated_concurrency']} "
          f"({sat['best']['tokens_per_request']:.0f} tokens and {sat['best']['prompt_tokens_per_request']:.0f} prompt "
          "tokens per request)")
    verdict = "meets" if ratio >= TARGET else "BELOW"
    print(f"ratio engine/saturated = {engine_tok_s:.1f} / {sat['saturated_tok_s']:.1f} = {ratio:.3f} "
          f"({verdict} the target {TARGET:.2f})")
    if same_level and same_level is not sat["best"]:
        print(f"  against the teacher at the engine's concurrency {conc}: {same_level['tok_s']:.1f} tok/s -> "
              f"{engine_tok_s / same_level['tok_s']:.3f}")
    if steady:
        s_sat = sat["saturated_steady_tok_s"]
        print(f"steady middle part: engine {steady['tok_s']:.1f} tok/s over {steady['span_s']:.1f} s "
              f"({steady['requests']} units, every worker busy) / teacher steady "
              f"{(f'{s_sat:.1f}' if s_sat else '-')} tok/s = "
              f"{(f'{steady_ratio:.3f}' if steady_ratio is not None else '-')}")
        drain = timings["engine_s"] - steady["span_s"]
        print(f"  outside the steady part (ramp-up + drain): {drain:.1f} s of {timings['engine_s']:.1f} s engine time")
    else:
        print(f"steady middle part: not computable ({len(records)} records for concurrency {conc}: needs at least 3c - 1)")
    replay_ratio = replay_steady_ratio = None
    if replay:
        replay_ratio = engine_tok_s / replay["tok_s"] if replay["tok_s"] else None
        rs = replay["steady_tok_s"]
        replay_steady_ratio = steady["tok_s"] / rs if steady and rs else None
        print(f"replay of the engine's requests (same prompts, seeds, max_tokens, concurrency {conc}; plain client): "
              f"{replay['requests']} requests, {replay['completion_tokens']} tokens in {replay['wall_s']:.1f} s = "
              f"{replay['tok_s']:.1f} tok/s (steady {(f'{rs:.1f}' if rs else '-')}); "
              f"{replay['prompt_tokens_per_request']:.0f} prompt tokens per request; {replay['errors']} errors")
        print(f"  engine/replay = {engine_tok_s:.1f} / {replay['tok_s']:.1f} = "
              f"{(f'{replay_ratio:.3f}' if replay_ratio else '-')}; steady "
              f"{(f'{replay_steady_ratio:.3f}' if replay_steady_ratio else '-')}  (the engine's own cost, the workload "
              "held equal)")
        print(f"  replay/saturated = {replay['tok_s'] / sat['saturated_tok_s']:.3f}  (what the workload's prompt mix and "
              "reply lengths cost the teacher, no engine involved)")
    print(f"load average: before (a) {fmt_load(gate['load'])}; before (b) {fmt_load(load_gen_before)}; "
          f"after (b) {fmt_load(load_gen_after)}"
          + (f"; after (c) {fmt_load(replay['load_after'])}" if replay else ""))
    if args.json:
        Path(args.json).write_text(json.dumps({
            "saturation": sat, "engine": {"timings": timings, "counts": counts, "concurrency": conc, "scale": scale,
                                          "generate_wall_s": gen_wall, "steady": steady},
            "ratio": ratio, "steady_ratio": steady_ratio, "server": where, "replay": replay,
            "replay_ratio": replay_ratio, "replay_steady_ratio": replay_steady_ratio,
            "load": {"gate": gate, "before_generate": load_gen_before, "after_generate": load_gen_after}},
            indent=2, default=str), encoding="utf-8")
        print(f"figures written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
