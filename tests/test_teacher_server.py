"""Teacher servers for real: llama.cpp with the embedded SmolLM2, readiness, failures, no orphans."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from sdg.teacher.backends import EndpointServer, LlamaCppServer, VllmServer
from sdg.teacher.serving import start_all, stop_all
from sdg.teacher.server_base import ServerState, TeacherStartError, pid_alive
from tests.conftest import processes_in_group, sdg_cli, smollm2_gguf


def _llama(tmp_path: Path, name: str = "t", **kw) -> LlamaCppServer:
    return LlamaCppServer(gguf=smollm2_gguf(), context_length=2048, n_parallel=2, n_threads=kw.pop("threads", 2),
                          model_name="teacher", log_path=tmp_path / f"{name}.log", startup_timeout_s=120, name=name, **kw)


def _gone(pid: int, timeout: float = 10.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if not pid_alive(pid) and not processes_in_group(pid):
            return True
        time.sleep(0.2)
    return False


def test_llama_cpp_serves_chat_and_completions_then_stops(tmp_path: Path) -> None:
    server = _llama(tmp_path, api_key="s3cret")
    with server as ep:
        assert server.state is ServerState.READY
        assert ep.backend == "llama-cpp" and ep.base_url.startswith("http://127.0.0.1:")
        headers = {"Authorization": "Bearer s3cret"}
        with httpx.Client(timeout=120) as c:
            r = c.post(f"{ep.base_url}/chat/completions", headers=headers,
                       json={"model": "teacher", "messages": [{"role": "user", "content": "Name a colour."}], "max_tokens": 8})
            assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"] is not None
            r = c.post(f"{ep.base_url}/completions", headers=headers, json={"model": "teacher", "prompt": "One, two,", "max_tokens": 4})
            assert r.status_code == 200 and "text" in r.json()["choices"][0]
            assert c.post(f"{ep.base_url}/completions", json={"prompt": "x", "max_tokens": 1}).status_code == 401
        pid = ep.pid
        assert pid and pid_alive(pid)
        assert "s3cret" not in " ".join(server.command())
    assert server.state is ServerState.STOPPED
    assert _gone(pid)
    with pytest.raises(httpx.ConnectError):
        httpx.get(ep.base_url.replace("/v1", "/health"), timeout=2)


def test_the_listening_line_counts_only_when_whole(tmp_path: Path) -> None:
    # llama.cpp's C logger shares the log file; seen in CI: a log line landed between the address and its
    # newline, and the port read as '359190.00.804.128'. The line is now one write, and only a whole line counts.
    server = _llama(tmp_path)
    assert server.url_from_log("noise\nSDG_LISTENING http://127.0.0.1:35919") is None  # newline not written yet
    assert server.url_from_log("SDG_LISTENING http://127.0.0.1:359190.00.804.128 I srv  init: ready\n") is None
    assert server.url_from_log("a\nSDG_LISTENING http://127.0.0.1:35919\nb\n") == "http://127.0.0.1:35919/v1"
    assert server.url_from_log("SDG_LISTENING http://[::1]:8080/\r\n") == "http://[::1]:8080/v1"
    # the logger's timestamp written just before the line (seen in a newcomer run: never read, never ready)
    assert server.url_from_log("0.00.947.707 SDG_LISTENING http://127.0.0.1:38019\nI srv  init: model loaded\n") == \
        "http://127.0.0.1:38019/v1"


def test_two_servers_on_one_machine_get_their_own_ports(tmp_path: Path) -> None:
    servers = [_llama(tmp_path, "a", threads=1), _llama(tmp_path, "b", threads=1)]
    try:
        endpoints = start_all(servers)
        assert len({e.base_url for e in endpoints}) == 2
        for e in endpoints:
            assert httpx.get(e.base_url.replace("/v1", "/health"), timeout=5).status_code == 200
    finally:
        stop_all(servers)
    assert all(_gone(e.pid) for e in endpoints if e.pid)


def test_port_taken_is_a_clear_error(tmp_path: Path) -> None:
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        port = blocker.getsockname()[1]
        server = _llama(tmp_path, port=port)
        with pytest.raises(TeacherStartError) as err:
            server.start()
    assert "port is already in use" in str(err.value) and "last log lines" in str(err.value)
    assert server.state is ServerState.FAILED
    assert server.proc is not None and _gone(server.proc.pid)


def test_missing_vllm_is_reported_from_the_log(tmp_path: Path) -> None:
    # This venv has no vLLM: the real launcher fails the real way.
    server = VllmServer(model_path=str(tmp_path), model_name="teacher", log_path=tmp_path / "v.log", startup_timeout_s=60)
    with pytest.raises(TeacherStartError, match="vLLM is not installed"):
        server.start()


def test_fatal_line_stops_a_server_that_would_hang(tmp_path: Path) -> None:
    # Stand-in for a GPU out-of-memory (cannot happen on this machine): a process that logs the
    # line and then hangs, as vLLM does, must be stopped at once instead of waiting for the deadline.
    script = "import time,subprocess; subprocess.Popen(['sleep','300']); print('torch.OutOfMemoryError: CUDA out of memory', flush=True); time.sleep(300)"
    server = VllmServer(model_path="x", model_name="teacher", command=[sys.executable, "-c", script],
                        log_path=tmp_path / "oom.log", startup_timeout_s=120)
    t0 = time.monotonic()
    with pytest.raises(TeacherStartError, match="ran out of memory"):
        server.start()
    assert time.monotonic() - t0 < 30
    assert server.proc is not None and _gone(server.proc.pid), "the grandchild `sleep` was left running"


def test_deadline_when_health_never_passes(tmp_path: Path) -> None:
    # A real HTTP server that is not a teacher: /health is a 404 for ever.
    server = VllmServer(model_path="x", model_name="teacher", command=[sys.executable, "-m", "http.server", "--bind", "127.0.0.1"],
                        log_path=tmp_path / "h.log", startup_timeout_s=3)
    server.command = lambda: [sys.executable, "-m", "http.server", "--bind", "127.0.0.1", str(server.port)]  # type: ignore[method-assign]
    with pytest.raises(TeacherStartError, match="not healthy after 3 s"):
        server.start()
    assert server.proc is not None and _gone(server.proc.pid)


def test_endpoint_backend_probes_and_refuses_a_dead_url(tmp_path: Path) -> None:
    with _llama(tmp_path) as ep:
        checked = EndpointServer(url=ep.base_url, model_name="teacher", startup_timeout_s=30).start()
        assert checked.base_url == ep.base_url and checked.pid is None
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    with pytest.raises(TeacherStartError, match="one-token completion failed"):
        EndpointServer(url=f"http://127.0.0.1:{dead}/v1", model_name="teacher", startup_timeout_s=2).start()


def _start_cli_serve(env: dict, tmp_path: Path) -> tuple[subprocess.Popen, dict]:
    ready = tmp_path / "ready.json"
    exe = Path(sys.executable).parent / "sdg"
    proc = subprocess.Popen([str(exe), "model", "serve", "--model-path", smollm2_gguf(), "--ready-file", str(ready),
                             "--num-threads", "2", f"teacher.log_dir={tmp_path}"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    end = time.monotonic() + 120
    while not ready.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < end, "sdg model serve did not get ready"
        time.sleep(0.2)
    return proc, json.loads(ready.read_text())


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_cli_serve_stops_its_server_on_signals(tmp_path: Path, sdg_env: dict, sig: int) -> None:
    proc, ready = _start_cli_serve(sdg_env, tmp_path)
    (ep,) = ready["endpoints"]
    assert oct((tmp_path / "ready.json").stat().st_mode & 0o777) == "0o600"
    assert httpx.get(ep["base_url"].replace("/v1", "/health"), timeout=5).status_code == 200
    os.kill(proc.pid, sig)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + sig, err
    assert "teacher ready: http://127.0.0.1:" in out
    assert _gone(ep["pid"])
    assert not (tmp_path / "ready.json").exists()


def test_cli_serve_killed_hard_leaves_no_orphan(tmp_path: Path, sdg_env: dict) -> None:
    proc, ready = _start_cli_serve(sdg_env, tmp_path)
    server_pid = ready["endpoints"][0]["pid"]
    os.kill(proc.pid, signal.SIGKILL)  # no cleanup code runs: the server's parent-death signal must do it
    proc.communicate(timeout=30)
    assert _gone(server_pid, timeout=20)


def test_cli_serve_reports_a_server_that_dies(tmp_path: Path, sdg_env: dict) -> None:
    proc, ready = _start_cli_serve(sdg_env, tmp_path)
    os.killpg(ready["endpoints"][0]["pid"], signal.SIGKILL)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 1 and "exited unexpectedly" in err and "Traceback" not in err


def test_cli_serve_refuses_tensor_parallel_without_gpus(tmp_path: Path, sdg_env: dict) -> None:
    model = tmp_path / "m"
    model.mkdir()
    env = {**sdg_env, "CUDA_VISIBLE_DEVICES": "0"}
    r = sdg_cli(env, "model", "serve", "--backend", "vllm", "--model-path", str(model), "--gpus", "2")
    assert r.returncode == 1 and "only 1 GPU visible" in r.stderr and "Traceback" not in r.stderr
    r = sdg_cli(sdg_env, "model", "serve", "--model-path", smollm2_gguf(), "--", "--dtype", "auto")
    assert r.returncode == 2 and "Unsupported extra arguments" in r.stderr


def test_fatal_lines_are_errors_not_advice() -> None:
    """vLLM's INFO hint about memory during CUDA-graph capture must not stop a healthy start; the real
    out-of-memory error, a port clash and a CUDA error must."""
    from sdg.teacher.server_base import PORT_IN_USE, fatal_reason

    healthy = ("INFO 12-01 10:00:00 [gpu_model_runner.py:2000] Capturing CUDA graphs. If out of memory error occurs "
               "during cudagraph capture, consider decreasing `gpu_memory_utilization` or switching to eager mode.\n"
               "INFO 12-01 10:00:01 If out-of-memory error occurs, try --enforce-eager\n"
               "WARNING 12-01 10:00:02 CUDA out of memory would be likely with this context length\n")
    assert fatal_reason(healthy) is None
    assert "out of memory" in fatal_reason(healthy + "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2 GiB\n")
    assert "out of memory" in fatal_reason("ERROR 12-01 10:00:03 [core.py:1] CUDA out of memory\n")
    assert fatal_reason("OSError: [Errno 98] Address already in use\n") == PORT_IN_USE
    assert "CUDA/NCCL" in fatal_reason("RuntimeError: CUDA error: no kernel image is available\n")
