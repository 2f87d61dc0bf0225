"""teacher.chat_template and teacher.system_prompt_mode, with the real llama.cpp server (xllamacpp) and the
embedded SmolLM2: a served template that raises on a system role is refused at readiness with the fix
named; with fold_into_user the same teacher starts and serves generation requests."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
import pytest

from sdg.config.compose import compose_config, to_object
from sdg.errors import ConfigError
from sdg.teacher.backends import LlamaCppServer, VllmServer
from sdg.teacher.chat_templates import BUILTIN, CHATML, resolve_chat_template
from sdg.teacher.client import Endpoint, TeacherClient, shape_messages
from sdg.teacher.server_base import PROBE_MESSAGES, ServerState, TeacherStartError
from sdg.teacher.serving import build_servers
from tests.conftest import smollm2_gguf

# Rejects a system message as Gemma's and Mixtral's original templates do (raise_exception). It reads the
# system text first: llama.cpp folds the system message into the user's by itself for a template that never
# reads it (its capability check finds "no system role"), so only such a template reaches the server's
# requests; vLLM renders templates as written.
REJECTS_SYSTEM = (
    "{%- if messages[0]['content'] and messages[0]['role'] == 'system' -%}"
    "{{ raise_exception('System role not supported') }}{%- endif -%}" + CHATML
)
SYSTEM_USER = [{"role": "system", "content": "Answer in one word."}, {"role": "user", "content": "Name a colour."}]


def _llama(tmp_path: Path, template: Path | str | None, mode: str, name: str = "t") -> LlamaCppServer:
    return LlamaCppServer(gguf=smollm2_gguf(), context_length=1024, n_parallel=1, n_threads=1, model_name="teacher",
                          chat_template=str(template) if template else None, system_prompt_mode=mode,
                          log_path=tmp_path / f"{name}.log", startup_timeout_s=120, name=name)


def _template(tmp_path: Path) -> Path:
    path = tmp_path / "rejects-system.jinja"
    path.write_text(REJECTS_SYSTEM, encoding="utf-8")
    return path


# --- shaping the messages: the one function the client and the probe use ------------------------------------

def test_fold_into_user_prepends_the_system_text_to_the_first_user_message() -> None:
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello"}, {"role": "user", "content": "Again"}]
    assert shape_messages(msgs, "system") is msgs
    folded = shape_messages(msgs, "fold_into_user")
    assert folded == [{"role": "user", "content": "Be brief.\n\nHi"}, {"role": "assistant", "content": "Hello"},
                      {"role": "user", "content": "Again"}]
    assert msgs[1] == {"role": "user", "content": "Hi"}, "the caller's messages are not changed"
    assert shape_messages([{"role": "user", "content": "Hi"}], "fold_into_user") == [{"role": "user", "content": "Hi"}]
    assert shape_messages([{"role": "system", "content": "S"}], "fold_into_user") == [{"role": "user", "content": "S"}]
    parts = [{"role": "system", "content": "S"}, {"role": "user", "content": [{"type": "text", "text": "U"}]}]
    assert shape_messages(parts, "fold_into_user")[0]["content"] == [{"type": "text", "text": "S"},
                                                                     {"type": "text", "text": "U"}]
    assert shape_messages(list(PROBE_MESSAGES), "fold_into_user") == [
        {"role": "user", "content": "You are a careful assistant.\n\nSay OK."}]
    with pytest.raises(ValueError, match="system_prompt_mode"):
        TeacherClient([Endpoint("http://127.0.0.1:1/v1")], system_prompt_mode="fold")


def test_config_keys_and_the_mixtral_teacher() -> None:
    cfg = to_object(compose_config([]))
    assert cfg.teacher.chat_template is None and cfg.teacher.system_prompt_mode == "system"
    assert to_object(compose_config(["teacher=mixtral-8x7b-instruct"])).teacher.system_prompt_mode == "fold_into_user"
    with pytest.raises(ConfigError, match=r"teacher\.system_prompt_mode=first is not a valid choice: must be one of "
                                          r"system, fold_into_user"):
        compose_config(["teacher.system_prompt_mode=first"])


# --- the template reaches the servers -------------------------------------------------------------------------

def test_builtin_and_file_templates_reach_vllm_and_llama_cpp(tmp_path: Path) -> None:
    assert set(BUILTIN) == {"chatml"}
    path = resolve_chat_template("chatml", tmp_path / "logs")
    assert path == tmp_path / "logs" / "chat-template-chatml.jinja" and path.read_text() == CHATML
    assert resolve_chat_template(None, tmp_path) is None
    own = _template(tmp_path)
    assert resolve_chat_template(str(own), tmp_path / "x") == own.resolve()
    with pytest.raises(ConfigError, match=r"teacher\.chat_template 'nope' is neither a file nor a template shipped "
                                          r"with sdg \(chatml\)"):
        resolve_chat_template("nope", tmp_path)

    model = tmp_path / "model"
    model.mkdir()
    cfg = to_object(compose_config(["teacher.backend=vllm", f"teacher.model={model}", f"teacher.log_dir={tmp_path}",
                                    "teacher.chat_template=chatml", "teacher.system_prompt_mode=fold_into_user"])).teacher
    [server] = build_servers(cfg, env={"CUDA_VISIBLE_DEVICES": "0"})
    assert isinstance(server, VllmServer) and server.system_prompt_mode == "fold_into_user"
    argv = server.command()
    assert argv[argv.index("--chat-template") + 1] == str(tmp_path / "chat-template-chatml.jinja")
    [server] = build_servers(cfg, env={"CUDA_VISIBLE_DEVICES": "0"}, extra_args=["--chat-template", "/t.jinja"])
    assert server.command().count("--chat-template") == 1 and server.command()[-1] == "/t.jinja"  # yours wins

    cfg = to_object(compose_config([f"teacher.model={smollm2_gguf()}", f"teacher.log_dir={tmp_path}",
                                    f"teacher.chat_template={own}"])).teacher
    [server] = build_servers(cfg, env={})
    assert isinstance(server, LlamaCppServer)
    argv = server.command()
    assert argv[argv.index("--chat-template-file") + 1] == str(own.resolve())

    cfg = to_object(compose_config(["teacher=endpoint", "teacher.chat_template=chatml"])).teacher
    with pytest.raises(ConfigError, match="needs a server that sdg starts"):
        build_servers(cfg, env={})


def test_llama_cpp_serves_the_configured_template(tmp_path: Path) -> None:
    path = resolve_chat_template("chatml", tmp_path)
    with _llama(tmp_path, path, "system") as ep:
        props = httpx.get(ep.base_url.replace("/v1", "/props"), timeout=30).json()
        assert props["chat_template"] == CHATML
        r = httpx.post(ep.base_url.replace("/v1", "/apply-template"), json={"messages": SYSTEM_USER}, timeout=30)
        assert r.json()["prompt"] == ("<|im_start|>system\nAnswer in one word.<|im_end|>\n"
                                      "<|im_start|>user\nName a colour.<|im_end|>\n<|im_start|>assistant\n")


# --- readiness: a template that rejects the system message ----------------------------------------------------

def test_a_template_that_rejects_system_is_refused_at_readiness_naming_the_fix(tmp_path: Path) -> None:
    server = _llama(tmp_path, _template(tmp_path), "system")
    start = time.monotonic()
    with pytest.raises(TeacherStartError) as err:
        server.start()
    assert time.monotonic() - start < 60, "refused at once, not after teacher.startup_timeout_s"
    msg = str(err.value)
    first = msg.splitlines()[0]
    assert "llama-cpp teacher 't' did not start: its chat template rejects the system message" in first
    assert "set teacher.system_prompt_mode=fold_into_user" in first
    assert "HTTP 400" in first and "System role not supported" in first
    assert server.state is ServerState.FAILED and not server.alive()


def test_the_same_teacher_is_accepted_with_fold_into_user_and_serves_folded_requests(tmp_path: Path) -> None:
    server = _llama(tmp_path, _template(tmp_path), "fold_into_user")
    with server as ep:
        assert server.state is ServerState.READY
        # the server really rejects a system message: only the folding lets requests through
        r = httpx.post(f"{ep.base_url}/chat/completions", timeout=60,
                       json={"model": "teacher", "messages": SYSTEM_USER, "max_tokens": 2})
        assert r.status_code == 400 and "System role not supported" in r.text

        async def ask(mode: str):
            async with TeacherClient([Endpoint(ep.base_url, "teacher")], system_prompt_mode=mode, max_retries=0) as c:
                return await c.chat(SYSTEM_USER, max_tokens=4, temperature=0)

        folded = asyncio.run(ask("fold_into_user"))
        assert folded.ok and folded.prompt_tokens > 0
        as_is = asyncio.run(ask("system"))
        assert not as_is.ok and as_is.status == 400
