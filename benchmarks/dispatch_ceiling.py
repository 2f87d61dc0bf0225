#!/usr/bin/env python3
"""Dispatch ceiling: how many units and teacher requests per second the engine itself can drive on one core.

A program that prints figures, not a test. The teacher is replaced by `ZeroLatencyStandIn` (bench_common.py), a
measuring instrument (not a model, not a mock of sdg): a minimal asyncio HTTP/1.1 server in its own
process, pinned to CPU 1 where there is one, that answers POST /v1/chat/completions at once with a
valid chat completion whose content is five parseable `Question: ...\\nAnswer: ...` pairs (about the
length of a real 256-token reply) and usage numbers. Everything on the engine side is real: the
packaged pipelines from `load_pipeline` (simple by default), the engine's own `engine_session` (the
`TeacherClient` over aiohttp, the `teacher.max_tokens` cap, the `ErrorBreaker`), `run_plan`, a
`JournalStore` in a temp dir, `Progress(mode="none")`, on a synthetic plan of N
units over leaves of every kind (freeform, grounded, foundational skills and knowledge leaves with
chunks) built directly from `sdg.taxonomy.leaves` records and `make_plan`. The engine process is pinned
to CPU 0. Since the teacher takes no time, the run's rate is the engine's own ceiling: units/s and
requests/s (target: >= 1,000 requests/s on one core), plus CPU-seconds per request of the engine and
the stand-in's own CPU use (if the stand-in is near 100 % of its core, it was the limit, not the engine).

    .venv/bin/python benchmarks/dispatch_ceiling.py                       # 20,000 units, 64 in flight
    .venv/bin/python benchmarks/dispatch_ceiling.py --units 2000          # quick
    .venv/bin/python benchmarks/dispatch_ceiling.py --profile             # + cProfile of a second run: top costs
    .venv/bin/python benchmarks/dispatch_ceiling.py --profile py-spy      # + py-spy (sampling) of a second run
    .venv/bin/python benchmarks/dispatch_ceiling.py --client-floor        # + the HTTP client alone, for scale

With --profile a second, separate run (--profile-units, default 5,000) is made under cProfile and the
top functions and the share of time per component (aiohttp, asyncio, json, parsers, journal,
...) are printed; cProfile inflates Python call overhead, so the shares are indicative and the rate
under it is not the figure. The clean figure is always the first run.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path
from typing import Any, Iterator

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parent.parent))

from bench_common import (ZeroLatencyStandIn, fmt_load, loadavg, pin_to, sigterm_as_interrupt,  # noqa: E402
                          wait_for_quiet)

TARGET_REQ_S = 2000.0  # issue 9: one client never limits an 8-GPU node serving a small model

# --------------------------------------------------------------------------------------------------------
# A synthetic plan over every leaf kind
# --------------------------------------------------------------------------------------------------------

_WORDS = ("river stone market light signal garden engine window ledger harbor lantern meadow copper paper "
          "violet thunder orbit canyon pepper silver anchor basket candle dragon falcon glacier hollow island "
          "jungle kettle lemon mirror needle ocean pillow quartz rocket saddle tunnel umbrella velvet walnut").split()


def _text(seed: int, words: int) -> str:
    out = []
    x = seed * 2654435761 % 2**32
    for i in range(words):
        x = (x * 1103515245 + 12345) % 2**31
        out.append(_WORDS[x % len(_WORDS)])
        if i % 14 == 13:
            out[-1] += "."
    return " ".join(out).capitalize() + "."


def synthetic_leaves(per_kind: int = 10, chunks: int = 2) -> list[Any]:
    """`per_kind` leaves of each kind (freeform, grounded, foundational skills; knowledge with `chunks` chunks),
    with realistic text sizes: skill seeds ~40-word answers, grounded contexts ~120 words, chunks ~400 words."""
    from sdg.taxonomy.chunking import Chunk
    from sdg.taxonomy.leaves import (FoundationalSkillLeaf, FreeformSkillLeaf, GroundedSkillLeaf, KnowledgeLeaf, QnA,
                                     KnowledgeSeed, SkillSeed, file_safe_name)

    leaves: list[Any] = []
    for n in range(per_kind):
        for kind in ("freeform", "grounded", "foundational", "knowledge"):
            root = {"knowledge": "knowledge", "foundational": "foundational_skills"}.get(kind, "compositional_skills")
            lid = f"{root}->bench->{kind}->leaf_{n:05d}"
            base = dict(id=lid, name=file_safe_name(lid), path="/".join(lid.split("->")) + "/qna.yaml",
                        created_by="bench", version=3)
            s = zlib.crc32(f"{kind}{n}".encode()) % 10**6
            if kind == "knowledge":
                seeds = tuple(KnowledgeSeed(_text(s + i, 100), tuple(QnA(_text(s + 10 * i + k, 10) + "?",
                                                                         _text(s + 20 * i + k, 30)) for k in range(3)))
                              for i in range(5))
                chunk_list = tuple(Chunk(c, _text(s + 100 + c, 400), 520, "doc.md") for c in range(chunks))
                leaves.append(KnowledgeLeaf(**base, domain="benchmarks", document_outline=_text(s, 8), seeds=seeds,
                                            chunks=chunk_list))
                continue
            seeds = tuple(SkillSeed(_text(s + i, 12) + "?", _text(s + 50 + i, 40),
                                    _text(s + 90 + i, 120) if kind == "grounded" else None) for i in range(5))
            task = _text(s + 7, 15)
            if kind == "freeform":
                leaves.append(FreeformSkillLeaf(**base, task_description=task, seeds=seeds))
            elif kind == "grounded":
                leaves.append(GroundedSkillLeaf(**base, task_description=task, seeds=seeds))
            else:
                leaves.append(FoundationalSkillLeaf(**base, task_description=task, seeds=seeds))
    return leaves


def synthetic_plan(units: int, *, per_kind: int = 10, chunks: int = 2, samples_per_unit: int = 5) -> tuple[Any, Iterator[Any]]:
    """A plan with at least `units` units and an iterator over exactly `units` of them (round robin over leaves)."""
    from sdg.engine.plan import make_plan
    from sdg.pipeline.inputs import input_rows

    leaves = synthetic_leaves(per_kind, chunks)
    inputs = sum(len(input_rows(leaf)) for leaf in leaves)
    shares = max(1, -(-units // inputs))
    plan = make_plan(leaves, scale=shares * samples_per_unit, samples_per_unit=samples_per_unit, seed=42)
    return plan, itertools.islice(plan.iter_units(), units)


# --------------------------------------------------------------------------------------------------------
# The engine run
# --------------------------------------------------------------------------------------------------------


def load_pipelines(name: str = "simple") -> dict[str, Any]:
    """Every kind's packaged pipeline (`sdg.run.load_pipelines` takes a config and the plan's kinds)."""
    from sdg.pipeline.inputs import KINDS
    from sdg.pipeline.loader import load_pipeline

    return {kind: load_pipeline(name, kind) for kind in KINDS}


def engine_config(concurrency: int, max_tokens: int = 256) -> Any:
    """The config fields `engine_session` reads, as a run against an endpoint with generate.max_concurrency =
    `concurrency` and teacher.max_tokens = `max_tokens` would have them (every other field at its default:
    the client's timeout and retries, the breaker's limit and window). Built directly, not through Hydra,
    so the engine child's memory baseline holds no config composer."""
    from sdg.config.schema import GenerateConfig, SdgConfig, TeacherConfig

    return SdgConfig(teacher=TeacherConfig(backend="endpoint", served_model_name="teacher", max_tokens=max_tokens),
                     generate=GenerateConfig(max_concurrency=concurrency, progress="none"))


def engine_progress(plan: Any, n_units: int) -> Any:
    """A silent `Progress` as `sdg.run` makes one: the units to run and every leaf's units (by leaf id)."""
    from sdg.engine.progress import Progress

    return Progress(n_units, {lp.leaf.id: lp.units for lp in plan.leaves}, mode="none")


async def run_engine(base_url: str, plan: Any, units: Iterator[Any], n_units: int, pipelines: dict[str, Any],
                     journal_dir: Path, *, concurrency: int, max_tokens: int = 256,
                     on_start: Any = None, progress: Any = None) -> Any:
    """What `sdg.run.LocalExecutor` does, against `base_url` (an endpoint it did not start): the engine's own
    `engine_session` (client over the endpoint with `concurrency` in flight, the max_tokens cap, the error
    breaker; workers = in flight per server x servers) and `run_plan` over `units`."""
    from sdg.engine.journal import JournalStore
    from sdg.engine.runner import run_plan
    from sdg.engine.session import engine_session
    from sdg.teacher.server_base import ServedEndpoint

    endpoint = ServedEndpoint(base_url=base_url, model="teacher", api_key=None, backend="endpoint", gpus=(),
                              log_path=None, pid=None)
    journals = JournalStore(journal_dir)
    progress = progress or engine_progress(plan, n_units)
    try:
        async with engine_session(engine_config(concurrency, max_tokens), [endpoint], label="stand-in-") as s:
            if on_start is not None:
                on_start()
            return await run_plan(plan, pipelines, s.chat, journals, done={}, workers=s.workers, progress=progress,
                                  breaker=s.breaker, units=units)
    finally:
        progress.close()
        journals.close()


def measure(base_url: str, n_units: int, *, concurrency: int, pipeline: str = "simple", per_kind: int = 10,
            standin: ZeroLatencyStandIn | None = None, profile: Any = None) -> dict[str, Any]:
    pipelines = load_pipelines(pipeline)
    plan, units = synthetic_plan(n_units, per_kind=per_kind)
    marks: dict[str, float] = {}

    def on_start() -> None:
        marks["wall"], marks["cpu"] = time.monotonic(), time.process_time()
        marks["standin_cpu"] = standin.cpu_s() if standin else float("nan")
        if profile is not None:
            profile.enable()

    with tempfile.TemporaryDirectory(prefix="sdg-bench-journal-") as tmp:
        stats = asyncio.run(run_engine(base_url, plan, units, n_units, pipelines, Path(tmp), concurrency=concurrency,
                                       on_start=on_start))
        if profile is not None:
            profile.disable()
        wall, cpu = time.monotonic() - marks["wall"], time.process_time() - marks["cpu"]
        standin_cpu = (standin.cpu_s() - marks["standin_cpu"]) if standin else float("nan")
        journal_bytes = sum(p.stat().st_size for p in Path(tmp).rglob("*.jsonl"))
    return {"units": stats.units_done, "failed_units": stats.units_failed, "requests": stats.requests,
            "samples": stats.samples, "errors": dict(stats.errors), "engine_s": stats.elapsed_s, "wall_s": wall,
            "cpu_s": cpu, "units_s": stats.units_done / stats.elapsed_s, "requests_s": stats.requests / stats.elapsed_s,
            "requests_per_cpu_s": stats.requests / cpu if cpu > 0 else float("nan"),
            "cpu_ms_per_request": 1000 * cpu / stats.requests if stats.requests else float("nan"),
            "standin_cpu_s": standin_cpu, "standin_busy": standin_cpu / wall if wall > 0 else float("nan"),
            "journal_mb": journal_bytes / 2**20, "leaves": len(plan.leaves), "concurrency": concurrency,
            "pipeline": pipeline}


# --------------------------------------------------------------------------------------------------------
# Transport floor: the HTTP client alone, no engine (what the engine's requests/s could be at best)
# --------------------------------------------------------------------------------------------------------


def _floor_body() -> dict[str, Any]:
    from teacher_saturation import realistic_messages

    return {"model": "teacher", "messages": realistic_messages(), "max_tokens": 256, "temperature": 0.7, "seed": 1}


async def _httpx_floor(base_url: str, n: int, concurrency: int) -> int:
    import httpx

    body, url, todo, done = _floor_body(), base_url + "/chat/completions", iter(range(n)), 0
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=60) as http:
        async def worker() -> None:
            nonlocal done
            for _ in todo:
                r = await http.post(url, json=body)
                r.json()["choices"][0]["message"]["content"]
                done += 1

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return done


async def _aiohttp_floor(base_url: str, n: int, concurrency: int) -> int:
    import aiohttp

    body, url, todo, done = _floor_body(), base_url + "/chat/completions", iter(range(n)), 0
    conn = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=conn) as http:
        async def worker() -> None:
            nonlocal done
            for _ in todo:
                async with http.post(url, json=body) as r:
                    (await r.json())["choices"][0]["message"]["content"]
                done += 1

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return done


async def _raw_floor(base_url: str, n: int, concurrency: int) -> int:
    """A minimal keep-alive HTTP/1.1 client on asyncio streams: JSON encode, send, read, JSON decode."""
    from urllib.parse import urlsplit

    u = urlsplit(base_url)
    path = (u.path.rstrip("/") + "/chat/completions").encode()
    body, todo, done = _floor_body(), iter(range(n)), 0

    async def worker() -> None:
        nonlocal done
        reader, writer = await asyncio.open_connection(u.hostname, u.port)
        try:
            for _ in todo:
                data = json.dumps(body).encode()
                writer.write(b"POST " + path + b" HTTP/1.1\r\nhost: " + u.netloc.encode() + b"\r\ncontent-type: "
                             b"application/json\r\ncontent-length: " + str(len(data)).encode() + b"\r\n\r\n" + data)
                head = await reader.readuntil(b"\r\n\r\n")
                i = head.lower().find(b"content-length:")
                length = int(head[i + 15:head.find(b"\r\n", i)])
                json.loads(await reader.readexactly(length))["choices"][0]["message"]["content"]
                done += 1
        finally:
            writer.close()

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return done


def client_floor(base_url: str, n: int, concurrency: int) -> list[tuple[str, float, float]]:
    """(client, requests/s, CPU ms per request) for httpx, aiohttp (sdg's transport) and a minimal asyncio client."""
    out = []
    for name, fn in (("httpx.AsyncClient alone (sdg's transport until Nov 2026)", _httpx_floor),
                     ("aiohttp.ClientSession alone (sdg's transport)", _aiohttp_floor),
                     ("minimal asyncio-streams HTTP/1.1 client", _raw_floor)):
        asyncio.run(fn(base_url, min(n, 500), concurrency))  # warm-up
        t0, c0 = time.monotonic(), time.process_time()
        done = asyncio.run(fn(base_url, n, concurrency))
        wall, cpu = time.monotonic() - t0, time.process_time() - c0
        out.append((name, done / wall, 1000 * cpu / done))
    return out


# --------------------------------------------------------------------------------------------------------
# Profile report
# --------------------------------------------------------------------------------------------------------

_COMPONENTS = (  # (label, substring of the file path or function label), first match wins
    ("sdg.pipeline.parsers (qa_pairs)", "sdg/pipeline/parsers.py"),
    ("sdg.pipeline.templates (prompt render)", "sdg/pipeline/templates.py"),
    ("sdg.pipeline blocks/pipeline", "sdg/pipeline/"),
    ("sdg.engine.journal (append, json)", "sdg/engine/journal.py"),
    ("sdg.engine.runner", "sdg/engine/runner.py"),
    ("sdg.engine.plan (iter_units, digests)", "sdg/engine/plan.py"),
    ("sdg.engine.progress", "sdg/engine/progress.py"),
    ("sdg.engine.stats (RunStats.add_unit)", "sdg/engine/stats.py"),
    ("sdg.engine.session (the capped chat)", "sdg/engine/session.py"),
    ("sdg.teacher.client", "sdg/teacher/client.py"),
    ("aiohttp/yarl/multidict", "/aiohttp/"),
    ("aiohttp/yarl/multidict", "/yarl/"),
    ("aiohttp/yarl/multidict", "/multidict/"),
    ("json (stdlib + C)", "/json/"),
    ("json (stdlib + C)", "_json"),
    ("asyncio event loop", "/asyncio/"),
    ("selectors/socket", "selectors.py"),
    ("selectors/socket", "socket"),
    ("selectors/socket", "'select'"),
    ("selectors/socket", "method 'poll'"),
    ("selectors/socket", "method 'send"),
    ("selectors/socket", "method 'recv"),
    ("hashlib/digests", "hashlib"),
    ("hashlib/digests", "sha256"),
    ("regex (re)", "/re/"),
    ("regex (re)", "re.Pattern"),
    ("regex (re)", "'sub' of"),
    ("regex (re)", "'match' of"),
    ("regex (re)", "'search' of"),
    ("regex (re)", "'finditer' of"),
    ("dataclasses/typing/abc", "dataclasses.py"),
    ("dataclasses/typing/abc", "typing.py"),
    ("dataclasses/typing/abc", "abc.py"),
    ("file writes/fsync", "method 'write' of '_io"),
    ("file writes/fsync", "method 'flush' of '_io"),
    ("file writes/fsync", "posix.fsync"),
    ("unicodedata/str", "unicodedata"),
)


def _component(filename: str, func: str) -> str:
    where = f"{filename}:{func}"
    for label, key in _COMPONENTS:
        if key in where:
            return label
    if filename == "~":
        return "other builtins"
    return "other python"


# Where the engine's time goes, as inclusive shares of the run: (label, file fragment, function name).
# Indented labels are parts of the first unindented one above them.
KEY_COSTS = (
    ("TeacherClient._attempt: the whole HTTP request via aiohttp", "sdg/teacher/client.py", "_attempt"),
    ("  aiohttp ClientSession._request (connector, HTTP/1.1 exchange)", "aiohttp/client.py", "_request"),
    ("  response read (ClientResponse.read)", "aiohttp/client_reqrep.py", "read"),
    ("qa_pairs parser", "sdg/pipeline/parsers.py", "qa_pairs"),
    ("DedupBlock._examples (normalizes every example, per row)", "sdg/pipeline/row_blocks.py", "_examples"),
    ("parsers.normalize (all callers)", "sdg/pipeline/parsers.py", "normalize"),
    ("prompt render PromptFile.messages", "sdg/pipeline/templates.py", "messages"),
    ("ExamplesBlock.render", "sdg/pipeline/row_blocks.py", "render"),
    ("JournalStore.append (json.dumps + write + flush)", "sdg/engine/journal.py", "append"),
    ("  JournalStore.sync (fsync of every open journal file)", "sdg/engine/journal.py", "sync"),
    ("record_of", "sdg/engine/journal.py", "record_of"),
    ("plan iter_units (sha256 of JSON per unit, row copy)", "sdg/engine/plan.py", "iter_units"),
    ("Progress.unit_done", "sdg/engine/progress.py", "unit_done"),
    ("ErrorBreaker.observe", "sdg/engine/runner.py", "observe"),
    ("RunStats.add_unit", "sdg/engine/stats.py", "add_unit"),
)


def _key_table(shares: list[tuple[str, float, float]]) -> str:
    lines = ["key costs (inclusive share of the run):"]
    for label, share, secs in shares:
        lines.append(f"  {share * 100:5.1f} %  {secs:7.2f} s  {label}")
    return "\n".join(lines)


def profile_report(profile: Any, top: int = 25) -> str:
    import io
    import pstats

    st = pstats.Stats(profile)
    total = sum(v[2] for v in st.stats.values())  # type: ignore[attr-defined]
    by_comp: dict[str, float] = {}
    rows = []
    for (filename, line, func), (cc, nc, tt, ct, _callers) in st.stats.items():  # type: ignore[attr-defined]
        comp = _component(filename, func)
        by_comp[comp] = by_comp.get(comp, 0.0) + tt
        rows.append((tt, ct, nc, f"{Path(filename).name if filename != '~' else ''}:{line}({func})"))
    keys = []
    for label, frag, name in KEY_COSTS:
        ct = sum(v[3] for (f, _l, fn), v in st.stats.items() if fn == name and frag in f)  # type: ignore[attr-defined]
        keys.append((label, ct / total if total else 0.0, ct))
    out = io.StringIO()
    out.write(f"profile: {total:.2f} s of own time in total\n\n{_key_table(keys)}\n\nshare of own time by component:\n")
    for comp, tt in sorted(by_comp.items(), key=lambda kv: -kv[1]):
        out.write(f"  {tt / total * 100:5.1f} %  {tt:7.2f} s  {comp}\n")
    out.write(f"\ntop {top} functions by own time (tottime):\n  {'own %':>6} {'own s':>7} {'cum s':>7} {'calls':>9}  function\n")
    for tt, ct, nc, name in sorted(rows, reverse=True)[:top]:
        out.write(f"  {tt / total * 100:6.1f} {tt:7.2f} {ct:7.2f} {nc:9d}  {name}\n")
    return out.getvalue()


_FRAME = re.compile(r"^(.*) \((.*?)(?::(\d+))?\)$")


def spy_report(raw_path: Path, rate: int, top: int = 25) -> str:
    """Summarize py-spy's raw (collapsed) stacks of the engine run: key costs, components, top own frames."""
    import collections

    total = 0
    incl: collections.Counter = collections.Counter()
    own: collections.Counter = collections.Counter()
    comp: collections.Counter = collections.Counter()
    for line in raw_path.read_text(encoding="utf-8", errors="replace").splitlines():
        stack, _, n_text = line.rpartition(" ")
        if "run_until_complete" not in stack or "measure (" not in stack:
            continue  # start-up, plan building, clean-up: not the engine run
        n = int(n_text)
        total += n
        frames = [m.groups() for m in map(_FRAME.match, stack.split(";")) if m]
        seen = set()
        for func, filename, _line in frames:
            if (func, filename) not in seen:
                seen.add((func, filename))
                incl[(func, filename)] += n
        if frames:
            func, filename, line_no = frames[-1]
            own[f"{func} ({filename}:{line_no})"] += n
            comp[_component("/" + filename, func)] += n
    if not total:
        return "py-spy: no samples of the engine run"
    keys = []
    for label, frag, name in KEY_COSTS:
        c = sum(v for (fn, f), v in incl.items() if fn == name and frag in f)
        keys.append((label, c / total, c / rate))
    out = [f"py-spy: {total} samples of the engine run ({total / rate:.1f} s of CPU at {rate} Hz, idle excluded)", "",
           _key_table(keys), "", "share of own samples by component:"]
    for c, n in comp.most_common():
        out.append(f"  {n / total * 100:5.1f} %  {c}")
    out += ["", f"top {top} frames by own samples:"]
    for f, n in own.most_common(top):
        out.append(f"  {n / total * 100:5.1f} %  {f}")
    return "\n".join(out)


def run_py_spy(py_spy: str, args: argparse.Namespace, rate: int = 200) -> str:
    """A separate run of this program under py-spy (sampling; no instrumentation overhead)."""
    with tempfile.TemporaryDirectory(prefix="sdg-bench-spy-") as tmp:
        raw = Path(tmp) / "stacks.txt"
        argv = [py_spy, "record", "-r", str(rate), "-f", "raw", "-o", str(raw), "--", sys.executable,
                str(Path(__file__).resolve()), "--units", str(args.profile_units), "--warmup-units", "0",
                "--max-load", "0", "--concurrency", str(args.concurrency), "--pipeline", args.pipeline,
                "--leaves-per-kind", str(args.leaves_per_kind), "--engine-cpu", str(args.engine_cpu),
                "--stand-in-cpu", str(args.stand_in_cpu)]
        proc = subprocess.run(argv, capture_output=True, text=True)
        figures = "\n".join(line for line in proc.stdout.splitlines() if "requests/s" in line or "engine time" in line)
        if not raw.exists():
            return f"py-spy failed (exit {proc.returncode}): {proc.stderr[-1500:]}"
        if args.profile_out:
            Path(args.profile_out).write_bytes(raw.read_bytes())
        return f"run under py-spy ({args.profile_units} units):\n{figures}\n\n" + spy_report(raw, rate)


def print_figures(title: str, r: dict[str, Any]) -> None:
    ok = "meets" if r["requests_s"] >= TARGET_REQ_S else "BELOW"
    print(f"{title}: {r['units']} units ({r['failed_units']} failed), {r['requests']} requests, {r['samples']} samples "
          f"kept, {r['leaves']} leaves, {r['concurrency']} in flight, pipeline {r['pipeline']}")
    print(f"  engine time {r['engine_s']:.2f} s; engine CPU {r['cpu_s']:.2f} s ({r['cpu_ms_per_request']:.3f} ms per request)")
    print(f"  units/s    {r['units_s']:10.1f}")
    print(f"  requests/s {r['requests_s']:10.1f}   ({ok} the target of {TARGET_REQ_S:.0f} requests/s on one core; "
          f"ratio {r['requests_s'] / TARGET_REQ_S:.2f})")
    print(f"  requests per engine CPU-second {r['requests_per_cpu_s']:.1f}")
    print(f"  stand-in CPU {r['standin_cpu_s']:.2f} s = {r['standin_busy'] * 100:.0f} % of its core"
          + ("  <- near saturation: the stand-in may have been the limit" if r["standin_busy"] > 0.85 else ""))
    if r["errors"]:
        print(f"  errors: {r['errors']}")
    print(f"  journal written: {r['journal_mb']:.1f} MB")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--units", type=int, default=20000)
    ap.add_argument("--concurrency", type=int, default=64, help="in-flight requests (engine workers = max_in_flight)")
    ap.add_argument("--pipeline", default="simple", help="packaged pipeline (the stand-in's replies suit 'simple')")
    ap.add_argument("--leaves-per-kind", type=int, default=10)
    ap.add_argument("--warmup-units", type=int, default=500)
    ap.add_argument("--engine-cpu", type=int, default=0)
    ap.add_argument("--stand-in-cpu", type=int, default=1)
    ap.add_argument("--profile", nargs="?", const="cprofile", choices=("cprofile", "py-spy"),
                    help="also profile a second run: cprofile (default) or py-spy (sampling, needs py-spy)")
    ap.add_argument("--py-spy", default=None, help="the py-spy executable (default: on PATH)")
    ap.add_argument("--client-floor", action="store_true",
                    help="also time the HTTP client alone (httpx, aiohttp, a minimal asyncio client) at the same "
                         "concurrency and request size: the ceiling the transport leaves the engine")
    ap.add_argument("--profile-units", type=int, default=5000)
    ap.add_argument("--profile-out", help="save the raw profile here (cProfile: pstats; py-spy: collapsed stacks)")
    ap.add_argument("--max-load", type=float, default=1.2, help="wait for the 1-min load average below this (0: off)")
    ap.add_argument("--load-wait-s", type=float, default=600.0)
    ap.add_argument("--json", metavar="OUT", help="write the figures as JSON here")
    args = ap.parse_args(argv)
    sigterm_as_interrupt()

    standin = ZeroLatencyStandIn(cpu=args.stand_in_cpu if args.stand_in_cpu >= 0 else None)
    with standin as base_url:
        pinned = pin_to(args.engine_cpu if args.engine_cpu >= 0 else None)
        print(f"teacher: {standin.name} (a zero-latency measuring instrument, not a model) at {base_url}, "
              f"{standin.pinned}; engine {pinned}", flush=True)
        if args.warmup_units:
            measure(base_url, args.warmup_units, concurrency=args.concurrency, pipeline=args.pipeline,
                    per_kind=args.leaves_per_kind)
        gate = wait_for_quiet(args.max_load, max_wait_s=args.load_wait_s)
        print(f"load average before: {fmt_load(gate['load'])} (waited {gate['waited_s']:.0f} s)", flush=True)
        r = measure(base_url, args.units, concurrency=args.concurrency, pipeline=args.pipeline,
                    per_kind=args.leaves_per_kind, standin=standin)
        r["load_before"], r["load_after"] = gate["load"], loadavg()
        print_figures("dispatch ceiling", r)
        print(f"load average after: {fmt_load(r['load_after'])}", flush=True)
        floor = None
        if args.client_floor:
            floor = client_floor(base_url, args.units, args.concurrency)
            print(f"\ntransport alone ({args.units} requests, {args.concurrency} in flight, the same stand-in, no engine):")
            for name, rate, ms in floor:
                print(f"  {name:45s} {rate:8.1f} requests/s  {ms:6.3f} ms CPU per request")
            print(f"  the engine's {r['cpu_ms_per_request']:.3f} ms per request = aiohttp alone "
                  f"{floor[1][2]:.3f} ms + {r['cpu_ms_per_request'] - floor[1][2]:.3f} ms of everything else", flush=True)
        prof_text = None
        if args.profile == "py-spy":
            py_spy = args.py_spy or shutil.which("py-spy")
            if not py_spy:
                ap.error("--profile py-spy: py-spy not found (pip install py-spy, or pass --py-spy PATH)")
            prof_text = run_py_spy(py_spy, args)
            print("\n" + prof_text)
        elif args.profile:
            import cProfile

            prof = cProfile.Profile()
            p = measure(base_url, args.profile_units, concurrency=args.concurrency, pipeline=args.pipeline,
                        per_kind=args.leaves_per_kind, standin=standin, profile=prof)
            print(f"\nunder cProfile ({args.profile_units} units; rates inflated by the profiler, shares indicative): "
                  f"{p['requests_s']:.0f} requests/s")
            prof_text = profile_report(prof)
            print(prof_text)
            if args.profile_out:
                prof.dump_stats(args.profile_out)
    print(f"{standin.name} answered {standin.served} chat completions in all")
    if args.json:
        Path(args.json).write_text(json.dumps({"run": r, "profile": prof_text, "client_floor": floor}, indent=2, default=str), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
