#!/usr/bin/env python3
"""Teacher saturation: the aggregate output tok/s one teacher server gives as concurrency rises.

A program that prints figures, not a test. It starts the embedded teacher (SmolLM2-135M on llama.cpp,
`--n-parallel` slots, 2 threads) or uses `--endpoint-url`, then sends one fixed, realistic chat prompt
(the simple pipeline's freeform question/answer instruction, rendered for a fixed skill; max_tokens 256,
temperature 0.7, seed = --seed + request number) at concurrency 1, 2, 4, 8, ... Each level sends a fixed
number of requests (a multiple of the concurrency, at least 3 rounds, sized from the best rate so far to
last about `--target-s` seconds) through a plain httpx client, so the figure is the server's, not sdg's client's.
It stops when two levels in a row gain less than 5 % over the best so far, or at `--max-concurrency`.

Per level it prints:
- tok/s: completion tokens / wall time of the level (ramp-up and the drain at the end included);
- steady tok/s: completion tokens of the requests that finished between the c-th completion and the
  last completion before the queue ran dry, over that span: the rate while every worker was busy
  (printed when that span holds at least c completions);
- request latency, tokens per request, the share of replies cut at max_tokens, errors.
Then the saturated figure: the best tok/s and the concurrency that reached it.

    .venv/bin/python benchmarks/teacher_saturation.py                        # embedded teacher, 4 slots
    .venv/bin/python benchmarks/teacher_saturation.py --target-s 5 --max-concurrency 4   # quick look
    .venv/bin/python benchmarks/teacher_saturation.py --endpoint-url http://127.0.0.1:8000/v1 --json sat.json

`measure_saturation(base_url, ...)` is the importable part (generate_saturation.py uses it).
Before measuring it waits (up to --load-wait-s) for the 1-minute load average to drop below --max-load:
on a shared 2-core machine a local model is many times slower when the cores are oversubscribed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parent.parent))

import httpx  # noqa: E402

from bench_common import fmt_load, loadavg, log_err, sigterm_as_interrupt, wait_for_quiet  # noqa: E402

GAIN = 0.05  # a level "rises" when it beats the best so far by this much
FLAT_LEVELS = 2  # stop after this many levels in a row that do not rise
MIN_ROUNDS = 3  # requests per level >= 3 x concurrency, so the steady window holds >= c completions

SKILL = "Write a short, polite reply to a customer email, in two or three sentences."
EXAMPLES = ("Question: A customer writes that their order arrived with a cracked mug. Write a reply.\n"
            "Answer: I am sorry your mug arrived cracked. We will send a replacement today at no cost, and you "
            "do not need to return the broken one. Thank you for letting us know.\n\n"
            "Question: A customer asks whether the shop is open on public holidays. Write a reply.\n"
            "Answer: Thank you for asking. We are open from 10:00 to 16:00 on public holidays, except on New "
            "Year's Day, when we are closed. We look forward to seeing you.")


def realistic_messages(num_samples: int = 5) -> list[dict]:
    """The simple pipeline's freeform prompt (the packaged prompt file), rendered for one fixed skill."""
    try:
        from sdg.pipeline.loader import PROMPTS
        from sdg.pipeline.templates import load_prompt

        prompt = load_prompt(PROMPTS / "simple_freeform_qa.txt")
        return prompt.messages({"task_description": SKILL, "_examples": EXAMPLES, "num_samples": num_samples})
    except Exception:  # noqa: BLE001 - outside the project: the same text, inline
        return [{"role": "system", "content": "You write practice examples that teach an AI assistant a skill. "
                                              "You always use the exact format you are asked for."},
                {"role": "user", "content": f"Skill: {SKILL}\n\nExample:\n\n{EXAMPLES}\n\nWrite {num_samples} new "
                                            "examples of this skill. Each new question must be different from the "
                                            "example and from the other new questions. Each answer must fully "
                                            "answer its own question.\n\nUse exactly this format for every "
                                            "example, with one blank line between examples:\n\nQuestion: (the "
                                            "question)\nAnswer: (the answer)\n\nWrite only the "
                                            f"{num_samples} examples and nothing else."}]


async def run_level(base_url: str, concurrency: int, n_requests: int, *, model: str = "teacher",
                    api_key: str | None = None, messages: list[dict] | None = None, max_tokens: int = 256,
                    temperature: float = 0.7, seed: int = 1234, seed_offset: int = 0,
                    timeout_s: float = 600.0) -> dict[str, Any]:
    """Send `n_requests` chat completions of one prompt, `concurrency` at a time (closed loop); figures of the level."""
    messages = messages or realistic_messages()
    bodies = ({"messages": messages, "max_tokens": max_tokens, "temperature": temperature,
               "seed": seed + seed_offset + i} for i in range(n_requests))
    return await run_requests(base_url, concurrency, bodies, model=model, api_key=api_key, timeout_s=timeout_s)


async def run_requests(base_url: str, concurrency: int, bodies: Iterable[dict[str, Any]], *, model: str = "teacher",
                       api_key: str | None = None, timeout_s: float = 600.0) -> dict[str, Any]:
    """Send the chat completion `bodies` (without "model"), `concurrency` at a time, in order, through a plain
    httpx client; figures as `summarize_level`."""
    url = base_url.rstrip("/") + "/chat/completions"
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else None
    todo = iter(bodies)
    records: list[dict[str, Any]] = []
    errors: list[str] = []
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=httpx.Timeout(timeout_s, connect=10.0), limits=limits) as http:
        t0 = time.monotonic()

        async def worker() -> None:
            for body in todo:
                start = time.monotonic()
                try:
                    r = await http.post(url, json={"model": model, **body}, headers=headers)
                    end = time.monotonic()
                    if r.status_code != 200:
                        errors.append(f"HTTP {r.status_code}: {r.text[:160]}")
                        continue
                    data = r.json()
                    usage = data.get("usage") or {}
                    records.append({"start": start - t0, "end": end - t0,
                                    "completion_tokens": int(usage.get("completion_tokens") or 0),
                                    "prompt_tokens": int(usage.get("prompt_tokens") or 0),
                                    "finish_reason": data["choices"][0].get("finish_reason")})
                except (httpx.HTTPError, ValueError, KeyError, IndexError, TypeError) as e:
                    errors.append(f"{type(e).__name__}: {e}")

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.monotonic() - t0
    return summarize_level(concurrency, records, wall, errors)


def steady_rate(ends_tokens: Sequence[tuple[float, int]], concurrency: int) -> dict[str, Any] | None:
    """Tokens per second between the c-th completion and the (n-c+1)-th (the last one before the queue ran dry).

    `ends_tokens`: (completion time, completion tokens) per request, any order. In that span every one of
    the c workers had a request in flight, so it is the rate without ramp-up and drain. None when the span
    holds fewer than c completions (n < 3c - 1): too few to mean anything.
    """
    done = sorted(ends_tokens)
    n, c = len(done), concurrency
    lo, hi = c - 1, n - c  # 0-based indices of the c-th and (n-c+1)-th completions
    if hi - lo < max(c, 2):
        return None
    span = done[hi][0] - done[lo][0]
    if span <= 0:
        return None
    tokens = sum(t for _, t in done[lo + 1:hi + 1])
    return {"tok_s": tokens / span, "span_s": span, "requests": hi - lo, "tokens": tokens}


def summarize_level(concurrency: int, records: list[dict[str, Any]], wall: float, errors: list[str]) -> dict[str, Any]:
    tokens = sum(r["completion_tokens"] for r in records)
    lat = [r["end"] - r["start"] for r in records]
    steady = steady_rate([(r["end"], r["completion_tokens"]) for r in records], concurrency)
    return {
        "concurrency": concurrency, "requests": len(records), "errors": len(errors), "error_samples": errors[:3],
        "wall_s": wall, "completion_tokens": tokens, "tok_s": tokens / wall if wall > 0 else 0.0,
        "steady_tok_s": steady["tok_s"] if steady else None, "steady": steady,
        "latency_mean_s": statistics.fmean(lat) if lat else None,
        "latency_p50_s": statistics.median(lat) if lat else None,
        "tokens_per_request": tokens / len(records) if records else 0.0,
        "prompt_tokens_per_request": (sum(r["prompt_tokens"] for r in records) / len(records)) if records else 0.0,
        "cut_at_max_tokens": (sum(r["finish_reason"] == "length" for r in records) / len(records)) if records else 0.0,
    }


def _levels(start: int, max_concurrency: int) -> Iterator[int]:
    c = start
    while c <= max_concurrency:
        yield c
        c *= 2


def measure_saturation(base_url: str, *, model: str = "teacher", api_key: str | None = None,
                       levels: Sequence[int] | None = None, max_concurrency: int = 32, target_s: float = 25.0,
                       requests_per_level: int | None = None, max_tokens: int = 256, temperature: float = 0.7,
                       seed: int = 1234, messages: list[dict] | None = None,
                       log: Callable[[str], None] = log_err) -> dict[str, Any]:
    """Aggregate output tok/s at rising concurrency until it stops rising; the figures as a dict.

    Keys: `levels` (one dict per level, see `summarize_level`), `best` (the level with the highest
    tok/s), `saturated_tok_s`, `saturated_concurrency`, `saturated_steady_tok_s` (best steady figure) and
    `steady_concurrency`, `single_tok_s` (the concurrency-1 level, else the warm-up request), `settings`, `load_before`/`load_after`.
    """
    messages = messages or realistic_messages()
    settings = {"base_url": base_url, "model": model, "max_tokens": max_tokens, "temperature": temperature,
                "seed": seed, "target_s": target_s, "requests_per_level": requests_per_level,
                "max_concurrency": max_concurrency}
    load_before = loadavg()
    # Warm-up (not counted): two requests one after the other; the first is cold (model pages, prompt
    # cache), the second gives the rate that sizes the first level.
    for k in range(2):
        warm = asyncio.run(run_level(base_url, 1, 1, model=model, api_key=api_key, messages=messages,
                                     max_tokens=max_tokens, temperature=temperature, seed=seed, seed_offset=10**6 + k))
        if warm["requests"] == 0:
            raise RuntimeError(f"the teacher at {base_url} did not answer the warm-up request: {warm['error_samples']}")
    single = warm["tok_s"]
    per_request = max(warm["tokens_per_request"], 1.0)
    log(f"warm-up: 2 requests; the second: {warm['completion_tokens']} tokens in {warm['wall_s']:.2f} s "
        f"({single:.1f} tok/s); prompt {warm['prompt_tokens_per_request']:.0f} tokens")
    results: list[dict[str, Any]] = []
    best: dict[str, Any] | None = None
    flat = 0
    offset = 0
    for c in (levels or list(_levels(1, max_concurrency))):
        rate = max(best["tok_s"] if best else single, 1e-6)
        if requests_per_level:
            n = requests_per_level
        else:
            n = max(MIN_ROUNDS * c, math.ceil(target_s * rate / per_request))
        n = math.ceil(n / c) * c  # whole rounds: a short last round would understate the rate
        lvl = asyncio.run(run_level(base_url, c, n, model=model, api_key=api_key, messages=messages,
                                    max_tokens=max_tokens, temperature=temperature, seed=seed, seed_offset=offset))
        offset += n
        lvl["load_after"] = loadavg()
        results.append(lvl)
        if lvl["tokens_per_request"]:
            per_request = lvl["tokens_per_request"]
        steady = f"{lvl['steady_tok_s']:.1f}" if lvl["steady_tok_s"] is not None else "-"
        log(f"concurrency {c:3d}: {lvl['requests']} requests in {lvl['wall_s']:.1f} s, {lvl['tok_s']:.1f} tok/s "
            f"(steady {steady}), load {fmt_load(lvl['load_after'])}")
        if lvl["requests"] == 0:
            break
        if best is None or lvl["tok_s"] > best["tok_s"] * (1 + GAIN):
            flat = 0
        else:
            flat += 1
        if best is None or lvl["tok_s"] > best["tok_s"]:
            best = lvl
        if flat >= FLAT_LEVELS:
            break
    one = next((r for r in results if r["concurrency"] == 1 and r["requests"]), None)
    if one is not None:
        single = one["tok_s"]  # the warm-up is a cold first request; the concurrency-1 level is the figure
    steadies = [r for r in results if r["steady_tok_s"] is not None]
    best_steady = max(steadies, key=lambda r: r["steady_tok_s"]) if steadies else None
    return {"settings": settings, "prompt_messages": messages, "single_tok_s": single, "warmup": warm,
            "levels": results, "best": best,
            "saturated_tok_s": best["tok_s"] if best else 0.0,
            "saturated_concurrency": best["concurrency"] if best else None,
            "saturated_steady_tok_s": best_steady["steady_tok_s"] if best_steady else None,
            "steady_concurrency": best_steady["concurrency"] if best_steady else None,
            "load_before": load_before, "load_after": loadavg()}


def format_table(res: dict[str, Any]) -> str:
    head = (f"{'conc':>5} {'reqs':>5} {'wall s':>7} {'tok/s':>8} {'steady':>8} {'gain':>7} {'lat p50':>8} "
            f"{'tok/req':>8} {'cut%':>5} {'err':>4}  load(1m) after")
    lines = [head, "-" * len(head)]
    prev = None
    for r in res["levels"]:
        gain = f"{(r['tok_s'] / prev - 1) * 100:+.0f}%" if prev else ""
        prev = max(prev or 0.0, r["tok_s"])
        steady = f"{r['steady_tok_s']:.1f}" if r["steady_tok_s"] is not None else "-"
        p50 = f"{r['latency_p50_s']:.2f}" if r["latency_p50_s"] is not None else "-"
        lines.append(f"{r['concurrency']:>5} {r['requests']:>5} {r['wall_s']:>7.1f} {r['tok_s']:>8.1f} {steady:>8} "
                     f"{gain:>7} {p50:>8} {r['tokens_per_request']:>8.1f} {r['cut_at_max_tokens'] * 100:>5.0f} "
                     f"{r['errors']:>4}  {r['load_after'][0]:.2f}")
    lines.append("(gain: over the best level before it; steady: rate while all workers were busy)")
    return "\n".join(lines)


def format_summary(res: dict[str, Any]) -> str:
    steady = (f"; best steady {res['saturated_steady_tok_s']:.1f} tok/s at concurrency {res['steady_concurrency']}"
              if res["saturated_steady_tok_s"] is not None else "")
    return (f"saturated: {res['saturated_tok_s']:.1f} tok/s at concurrency {res['saturated_concurrency']}{steady} "
            f"(single request {res['single_tok_s']:.1f} tok/s; prompt "
            f"{res['best']['prompt_tokens_per_request'] if res['best'] else 0:.0f} tokens, "
            f"max_tokens {res['settings']['max_tokens']})")


@contextlib.contextmanager
def embedded_teacher(*, n_parallel: int = 4, n_threads: int = 2, context_length: int = 4096,
                     log_dir: Path | None = None) -> Iterator[Any]:
    """The embedded SmolLM2 on llama.cpp, started here and always stopped; yields its ServedEndpoint."""
    from sdg.config.compose import compose_config, to_object
    from sdg.teacher.backends import LlamaCppServer
    from sdg.teacher.models import embedded_gguf

    # the model cache the product uses with no overrides (teacher.model_dir: InstructLab's, XDG_CACHE_HOME-aware)
    gguf = embedded_gguf(Path(to_object(compose_config([])).teacher.model_dir).expanduser())
    with contextlib.ExitStack() as stack:
        if log_dir is None:
            log_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="sdg-bench-teacher-")))
        server = LlamaCppServer(gguf=str(gguf), model_name="teacher", context_length=context_length,
                                n_parallel=n_parallel, n_threads=n_threads, log_path=log_dir / "llama.log",
                                startup_timeout_s=180)
        t0 = time.monotonic()
        ep = stack.enter_context(server)
        log_err(f"embedded teacher {gguf.name}: {n_parallel} slots, {n_threads} threads, ctx {context_length}/slot, "
                f"ready in {time.monotonic() - t0:.1f} s at {ep.base_url}")
        yield ep


def add_server_args(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--endpoint-url", help="measure this OpenAI-compatible server (…/v1) instead of starting one")
    ap.add_argument("--model", default="teacher", help="model name at the endpoint")
    ap.add_argument("--api-key", default=None)
    ap.add_argument("--n-parallel", type=int, default=4, help="llama.cpp slots of the embedded teacher")
    ap.add_argument("--threads", type=int, default=2, help="llama.cpp threads (2: one server on 2 cores)")
    ap.add_argument("--context-length", type=int, default=4096, help="context per slot")
    ap.add_argument("--max-load", type=float, default=1.2, help="wait for the 1-min load average below this (0: off)")
    ap.add_argument("--load-wait-s", type=float, default=600.0, help="wait at most this long for the load")


def add_saturation_args(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--max-concurrency", type=int, default=32)
    ap.add_argument("--levels", help="comma-separated concurrency levels instead of 1,2,4,...")
    ap.add_argument("--target-s", type=float, default=25.0, help="about how long each level runs")
    ap.add_argument("--requests", type=int, default=None, help="fixed requests per level (rounded up to whole rounds)")
    ap.add_argument("--max-tokens", type=int, default=256)
    ap.add_argument("--temperature", type=float, default=0.7)
    ap.add_argument("--seed", type=int, default=1234)


def saturation_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    return dict(model=args.model, api_key=args.api_key, max_concurrency=args.max_concurrency,
                levels=[int(x) for x in args.levels.split(",")] if args.levels else None, target_s=args.target_s,
                requests_per_level=args.requests, max_tokens=args.max_tokens, temperature=args.temperature,
                seed=args.seed)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_server_args(ap)
    add_saturation_args(ap)
    ap.add_argument("--json", metavar="OUT", help="write the figures as JSON here")
    args = ap.parse_args(argv)
    sigterm_as_interrupt()

    gate = wait_for_quiet(args.max_load, max_wait_s=args.load_wait_s)
    print(f"load average before: {fmt_load(gate['load'])} (waited {gate['waited_s']:.0f} s)", flush=True)
    with contextlib.ExitStack() as stack:
        if args.endpoint_url:
            base_url, where = args.endpoint_url.rstrip("/"), f"endpoint {args.endpoint_url}"
            if not base_url.endswith("/v1"):
                base_url += "/v1"
        else:
            ep = stack.enter_context(embedded_teacher(n_parallel=args.n_parallel, n_threads=args.threads,
                                                      context_length=args.context_length))
            base_url = ep.base_url
            where = f"embedded SmolLM2-135M on llama.cpp ({args.n_parallel} slots, {args.threads} threads)"
        res = measure_saturation(base_url, **saturation_kwargs(args))
    res["server"] = where
    res["gate"] = gate
    print(f"teacher: {where}")
    print(format_table(res))
    print(format_summary(res))
    print(f"load average after: {fmt_load(res['load_after'])}")
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2, default=str), encoding="utf-8")
        print(f"figures written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
