"""The quality stage inside a real run: a teacher whose replies are planted with exact duplicates, near-
duplicates, a near-copy of a seed example and an evaluation item (the deterministic stand-in over real HTTP,
so what must be dropped is known) -> the training files hold none of them, each drop is counted per leaf
with its reason, and the dropped rows are in dropped_<reason>.jsonl."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from sdg.config.compose import compose_config, to_object
from sdg.run import generate
from sdg.taxonomy.init import init_taxonomy
from tests.standin_teacher import DeterministicStandInTeacher

pytestmark = pytest.mark.slow

EVAL_ANSWER = ("The committee approved the northern bridge repairs after three engineers reported that the old "
               "steel cables had lost nearly half of their original strength")
FIXED_ANSWER = ("Tides rise and fall twice a day because the moon pulls the oceans toward it while the earth "
                "turns underneath the bulge of water on both sides")
NEAR_ANSWER = ("Volcanoes form where molten rock from deep inside the planet finds a weak path through the crust "
               "and builds a mountain of cooled lava and ash over many years {key}")


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def test_planted_duplicates_copies_and_eval_items_are_removed_and_counted(tmp_path: Path) -> None:
    taxonomy = init_taxonomy(tmp_path / "taxonomy").path
    haiku = yaml.safe_load((taxonomy / "compositional_skills/writing/freeform/haiku/qna.yaml").read_text())
    seed = haiku["seed_examples"][0]
    eval_set = tmp_path / "eval.jsonl"
    eval_set.write_text(json.dumps({"question": "What did the committee approve?", "answer": EVAL_ANSWER}) + "\n")
    pairs = [
        ("Why do ocean tides happen twice a day?", FIXED_ANSWER),  # the same in every reply: exact duplicates
        ("How do volcanoes form?", NEAR_ANSWER),  # differs by one token: near-duplicates
        # a near-copy of haiku's seed 1 (one token differs per reply, so never an exact duplicate first)
        (seed["question"].replace("lighthouse", "light house"), seed["answer"] + " ({key})"),
        ("What happened to the bridge repairs in {key}?", EVAL_ANSWER),  # an evaluation item
        ("Name a fact about prompt {key}.", "Prompt {key} is unique: it has its own hash and its own answer."),
    ]
    with DeterministicStandInTeacher(pairs=pairs) as url:
        cfg = to_object(compose_config([f"taxonomy.path={taxonomy}", "pipeline.sdg_scale_factor=5",
                                        "taxonomy.documents.chunk_tokens=4000", "teacher=endpoint",
                                        f"teacher.endpoint_url={url}", f"generate.output_dir={tmp_path / 'out'}",
                                        "generate.progress=none", f"quality.decontaminate=[{eval_set}]"]))
        result = generate(cfg, log=lambda m: None)
    run = result.run_dir
    assert run is not None and result.complete
    report = json.loads((run / "quality_report.json").read_text())
    manifest = json.loads((run / "manifest.json").read_text())
    dropped = {reason: _jsonl(run / f"dropped_{reason}.jsonl")
               for reason in ("exact_duplicate", "near_duplicate", "seed_copy", "contaminated")}

    # every kind of planted row was found, counted per leaf and run-wide, and written out with its reason
    totals = report["run"]["quality_dropped"]
    for reason, rows in dropped.items():
        assert rows, f"nothing dropped as {reason}"
        assert totals[reason] == len(rows) == manifest["quality"]["dropped"][reason]
        assert all(r["reason"] == reason and r["detail"] and r["row"]["question"] for r in rows)
        per_leaf = sum(leaf["quality_dropped"].get(reason, 0) for leaf in report["leaves"].values())
        assert per_leaf == len(rows)
    assert report["run"]["contamination"] == {"eval.jsonl": len(dropped["contaminated"])}
    # a seed copy counts only in the leaf whose seed it copies
    assert {r["leaf_name"] for r in dropped["seed_copy"]} == {n for lid, leaf in report["leaves"].items()
                                                             for n in [leaf["name"]] if "haiku" in lid}
    for lid, leaf in report["leaves"].items():
        assert leaf["kept"] == leaf["pipeline_kept"] - sum(leaf["quality_dropped"].values()), lid
        assert leaf["funnel"][-1] == ["kept", leaf["kept"]]

    # the training data holds no duplicate pair, no evaluation item, and (in the haiku leaf) no seed copy
    train = _jsonl(run / f"train_{manifest['stamp']}.jsonl")
    pairs_seen = [(r["user"], r["assistant"]) for r in train]
    assert len(train) == report["run"]["kept"] > 0
    assert len(set(pairs_seen)) == len(pairs_seen)
    assert not any(EVAL_ANSWER[:60] in a for _, a in pairs_seen)
    assert sum(FIXED_ANSWER in a for _, a in pairs_seen) == 1  # the first one kept
    assert sum(NEAR_ANSWER[:60] in a for _, a in pairs_seen) == 1
