"""One unit of the simple freeform pipeline against the REAL embedded teacher (SmolLM2-135M on llama.cpp).

The tiny model writes off-format text, so this asserts structure only: whatever it wrote became rows
with question/response strings or counted drops, and nothing raised. One server, 2 threads, short
replies: this machine is shared.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from sdg.pipeline.loader import DEFINITIONS, load_pipeline
from sdg.pipeline.types import RequestError, UnitContext
from sdg.teacher.backends import LlamaCppServer
from sdg.teacher.client import Endpoint, TeacherClient
from sdg.teacher.models import embedded_gguf
from tests.test_pipeline_replay import skill_row


@pytest.mark.slow
def test_simple_freeform_unit_with_the_real_embedded_teacher(tmp_path: Path) -> None:
    pipe_dir = tmp_path / "simple-short"
    pipe_dir.mkdir()
    for f in DEFINITIONS.joinpath("simple").glob("*.yaml"):  # the shipped pipeline, with short replies
        (pipe_dir / f.name).write_text(f.read_text(encoding="utf-8").replace("max_tokens: 1024", "max_tokens: 160"),
                                       encoding="utf-8")
    pipeline = load_pipeline(str(pipe_dir), "freeform_skill")
    assert pipeline.blocks[1].max_tokens == 160
    row = skill_row(2)
    gguf = embedded_gguf(tmp_path / "models")
    server = LlamaCppServer(gguf=str(gguf), model_name="teacher", context_length=4096, n_parallel=2, n_threads=2,
                            log_path=tmp_path / "x.log", startup_timeout_s=300)

    async def one_unit(base_url: str):
        """Up to three seeds until the small model writes something parseable (it often does not)."""
        async with TeacherClient([Endpoint(base_url, "teacher")], timeout_s=300, max_retries=1) as client:
            for seed in (11, 12, 13):
                ctx = UnitContext(chat=client.chat, seed=seed, leaf_id=row["leaf_node_path"], unit_id=f"real-{seed}")
                result = await pipeline.run(row, ctx)
                if result.generated:
                    break
            return result

    with server as ep:
        result = asyncio.run(one_unit(ep.base_url))

    print(f"rows={result.rows!r}\ndropped={dict(result.dropped)} generated={result.generated} "
          f"requests={result.requests} tokens={result.prompt_tokens}+{result.completion_tokens} errors={result.errors}")
    assert result.requests >= 1 and not result.errors
    assert result.generated > 0, "three replies of the real teacher and not one parseable sample"
    assert len(result.rows) <= 2
    for out in result.rows:
        assert isinstance(out["question"], str) and out["question"].strip()
        assert isinstance(out["response"], str) and out["response"].strip()
        assert out["seed_question"] == row["seed_question"] and "_examples" not in out
    if not result.rows:
        assert sum(result.dropped.values()) >= 1, "a unit with no rows says why"
    assert all(isinstance(e, RequestError) for e in result.errors)
    if not result.errors:
        assert result.prompt_tokens > 0 and result.completion_tokens > 0
