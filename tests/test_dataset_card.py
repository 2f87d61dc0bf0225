"""The run's dataset card (`README.md`, Hugging Face form): front matter that parses as YAML with configs
whose files exist and hold rows, row counts equal to the files' line counts, the run's facts in the body;
and written by a real generate run (deterministic stand-in teacher over real HTTP)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from sdg.output.dataset_card import card_files, count_lines, parse_card, size_category, write_dataset_card
from sdg.output.instructlab import write_outputs
from sdg.output.reports import LeafQuality, Manifest, ManifestCounts, ManifestLeaf
from tests.test_output_writer import FREEFORM, GENERATED, LEAVES, STAMP, SYS

ROW = re.compile(r"^\| `([^`]+)` \| (\d+) \|", re.M)


def _file_rows(body: str) -> list[tuple[str, str]]:
    """(path, rows) of the card's Files table."""
    return ROW.findall(body.split("## Files", 1)[1].split("\n## ", 1)[0])


def _manifest(run_dir: Path, leaves, quality: dict[str, LeafQuality], *, license: str | None = "apache-2.0",
              failed: int = 0) -> Manifest:
    config = {"generate": {"license": license}, "taxonomy": {"repository": "https://example.com/taxonomy.git"}}
    return Manifest(
        sdg_version="0.1.0", run_dir=str(run_dir), stamp=STAMP, resumed=False,
        taxonomy={"path": "/data/my-taxonomy", "base": "origin/main", "commit": "c0ffee" * 6 + "abcd", "dirty": True},
        leaves=[ManifestLeaf(leaf.id, leaf.name, leaf.kind, leaf.path, "fp", 3, 9, quality[leaf.id].kept)
                for leaf in leaves],
        teacher={"name": "mixtral", "backend": "vllm", "model": "mistralai/Mixtral-8x7B-Instruct-v0.1",
                 "served_model_name": None},
        pipeline={"name": "full", "fingerprints": {}, "scale_factor": 30, "samples_per_unit": 5}, seed=42,
        executor={"kind": "local"}, config=config, versions={"sdg": "0.1.0"},
        counts=ManifestCounts(units=3 * len(leaves), units_run=3, units_resumed=0, units_failed=failed, units_not_needed=0, units_topup=0,
                              target_samples=9, generated=sum(q.generated for q in quality.values()),
                              kept=sum(q.kept for q in quality.values()), requests=10, prompt_tokens=100,
                              completion_tokens=50),
        timings={"started": 1_700_000_000.0, "finished": 1_700_000_100.0}, errors={})


def _quality(generated) -> dict[str, LeafQuality]:
    return {lid: LeafQuality(kind="k", units=3, target=9, generated=len(rows) + 2, kept=len(rows),
                             dropped={"judge_answer:low_score": 2}) for lid, rows in generated.items()}


def _counted(run_dir: Path, rel: str) -> int:
    path = run_dir / rel
    if rel.endswith("/"):
        return sum(count_lines(p) for p in path.glob("*.jsonl"))
    return count_lines(path)


def _check_card(run_dir: Path) -> tuple[dict, str]:
    """What every card must satisfy: YAML front matter, configs whose files exist and hold rows, and file
    counts equal to the files' own line counts (checked with a plain newline count, not the card's)."""
    front, body = parse_card((run_dir / "README.md").read_text(encoding="utf-8"))
    assert front["task_categories"] == ["text-generation"] and front["size_categories"]
    for config in front["configs"]:
        for data in config["data_files"]:
            paths = data["path"] if isinstance(data["path"], list) else [data["path"]]
            for rel in paths:
                assert (run_dir / rel).is_file(), rel
                assert (run_dir / rel).read_bytes().count(b"\n") > 0, rel
    listed = _file_rows(body)
    assert listed
    for rel, rows in listed:
        plain = ((run_dir / rel).read_bytes().count(b"\n") if not rel.endswith("/")
                 else sum(p.read_bytes().count(b"\n") for p in (run_dir / rel).glob("*.jsonl")))
        assert int(rows) == plain == _counted(run_dir, rel), rel
    return front, body


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    d = tmp_path_factory.mktemp("run")
    out = write_outputs(d, STAMP, LEAVES, GENERATED, system_prompt=SYS)
    quality = _quality(GENERATED)
    path = write_dataset_card(d, _manifest(d, LEAVES, quality), out, quality)
    return d, out, path


def test_card_front_matter_counts_and_configs(written) -> None:
    d, out, path = written
    assert path == d / "README.md"
    front, body = _check_card(d)
    assert front["license"] == "apache-2.0"
    names = [c["config_name"] for c in front["configs"]]
    assert names == ["knowledge_train_msgs", "skills_train_msgs", "legacy", "mmlubench"]
    assert front["configs"][0].get("default") is True
    assert {f["split"] for f in front["configs"][2]["data_files"]} == {"train", "test"}
    assert len(front["configs"][3]["data_files"][0]["path"]) == 2  # both knowledge leaves' sets
    training = count_lines(out.knowledge_train_msgs) + count_lines(out.skills_train_msgs)
    assert front["size_categories"] == [size_category(training)]
    # every JSONL file of the run is accounted for, once
    listed = {rel for rel, _ in _file_rows(body)}
    jsonl = {p.relative_to(d).as_posix() for p in out.paths if p.suffix == ".jsonl"}
    per_file = {rel for rel in listed if not rel.endswith("/")}
    folders = {rel for rel in listed if rel.endswith("/")}
    assert per_file | {p for p in jsonl if any(p.startswith(f) for f in folders)} == jsonl
    assert folders == {f"preprocessed_{STAMP}/", f"generated_{STAMP}/"}


def test_card_body_tells_where_the_data_came_from(written) -> None:
    _, out, path = written
    _, body = parse_card(path.read_text(encoding="utf-8"))
    for fact in ("/data/my-taxonomy", "https://example.com/taxonomy.git", "c0ffee", "uncommitted changes",
                 "mixtral", "Mixtral-8x7B-Instruct", "full, scale factor 30", "State: complete",
                 "judge_answer:low_score: 2", 'load_dataset("json"', "--phased-phase1-data", "data_path=",
                 "lm_eval", "--include_path"):
        assert fact in body, fact
    for leaf in LEAVES:
        assert f"`{leaf.id}` | {leaf.kind} |" in body


def test_empty_files_get_no_config_and_an_incomplete_run_says_so(tmp_path: Path) -> None:
    generated = {FREEFORM.id: GENERATED[FREEFORM.id]}
    out = write_outputs(tmp_path, STAMP, [FREEFORM], generated, system_prompt=SYS)
    quality = _quality(generated)
    quality[FREEFORM.id].failed_units = 1
    write_dataset_card(tmp_path, _manifest(tmp_path, [FREEFORM], quality, license=None, failed=1), out, quality)
    front, body = _check_card(tmp_path)
    assert front["license"] == "other"  # the default
    assert [c["config_name"] for c in front["configs"]] == ["skills_train_msgs", "legacy"]  # no knowledge, no MCQ
    assert "incomplete: 1 of 3 units failed" in body and "mmlubench" not in body

    empty = tmp_path / "empty"
    out = write_outputs(empty, STAMP, [FREEFORM], {FREEFORM.id: []}, system_prompt=SYS)
    quality = _quality({FREEFORM.id: []})
    write_dataset_card(empty, _manifest(empty, [FREEFORM], quality), out, quality)
    front, _ = parse_card((empty / "README.md").read_text(encoding="utf-8"))
    assert [c["config_name"] for c in front["configs"]] == ["legacy"]  # only the seed test file has rows
    assert front["size_categories"] == ["n<1K"]


def test_size_categories_and_line_counts(tmp_path: Path) -> None:
    assert [size_category(n) for n in (0, 999, 1000, 9_999, 10_000, 2_500_000)] == [
        "n<1K", "n<1K", "1K<n<10K", "1K<n<10K", "10K<n<100K", "1M<n<10M"]
    f = tmp_path / "x.jsonl"
    f.write_bytes(b"")
    assert count_lines(f) == 0
    f.write_bytes(b'{"a": 1}\n{"a": 2}')  # a last line without its newline still counts
    assert count_lines(f) == 2
    f.write_bytes(b'{"a": 1}\n' * 300_000)  # more than one read chunk
    assert count_lines(f) == 300_000


def test_a_generate_run_writes_the_card_mmlubench_and_lists_complete(tmp_path: Path, monkeypatch) -> None:
    """finish() writes the card after the manifest; the knowledge leaf gets its MCQ set; `data list` sees it."""
    from sdg.config.compose import compose_config, to_object
    from sdg.output.run_list import COMPLETE, list_runs
    from sdg.run import generate
    from sdg.taxonomy.init import init_taxonomy
    from tests.standin_teacher import DeterministicStandInTeacher

    for var, sub in (("XDG_DATA_HOME", "data"), ("XDG_CACHE_HOME", "cache")):
        monkeypatch.setenv(var, str(tmp_path / sub))
    tax = init_taxonomy(tmp_path / "taxonomy").path
    with DeterministicStandInTeacher() as url:
        cfg = to_object(compose_config([f"taxonomy.path={tax}", "pipeline.sdg_scale_factor=2", "teacher=endpoint",
                                        f"teacher.endpoint_url={url}", f"generate.output_dir={tmp_path / 'out'}",
                                        "generate.progress=none", "generate.license=cc-by-4.0",
                                        "taxonomy.documents.allow=[https,ssh,local]"]))  # the example's local docs
        result = generate(cfg, log=lambda m: None)
    assert result.complete
    run = result.run_dir
    front, body = _check_card(run)
    assert front["license"] == "cc-by-4.0"
    knowledge = [lo for lo in result.outputs.leaves if lo.kind == "knowledge"]
    assert knowledge and all(lo.mmlubench and lo.mmlubench_rows > 0 and lo.eval_task for lo in knowledge)
    assert str(result.summary().kept) in body
    (listing,) = list_runs(tmp_path / "out")
    assert listing.state == COMPLETE and listing.kept == result.summary().kept and listing.leaves == 4
    assert {f.path for f in card_files(result.outputs)} >= {p.relative_to(run).as_posix()
                                                            for lo in knowledge for p in (lo.mmlubench,)}
