"""mix_recipe: sampling sizes (fraction, absolute, up/down-sampling), training-record shape, errors."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml

from sdg.errors import SdgError
from sdg.output.mix import mix_recipe, sample_count, sample_indices
from sdg.output.recipe import Recipe, RecipeEntry, read_recipe, write_recipe

SYS = "mix system prompt"


def _dataset(path: Path, n: int, tag: str, **extra: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps({"messages": [{"role": "user", "content": f"{tag} q{i}"},
                                      {"role": "assistant", "content": f"{tag} a{i}"}],
                         "id": f"{tag}-{i}", "unmask": False, **extra}) for i in range(n)]
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def _recipe(tmp: Path, entries: list[tuple[str, Any]], sys_prompt: str | None = "recipe prompt") -> Path:
    path = tmp / "recipe.yaml"
    path.write_text(yaml.safe_dump({"datasets": [{"path": p, "sampling_size": s} for p, s in entries],
                                    "metadata": {"sys_prompt": sys_prompt}}))
    return path


def _mix(tmp: Path, entries: list[tuple[str, Any]], **kw: Any) -> list[dict[str, Any]]:
    out = tmp / "mixed.jsonl"
    n = mix_recipe(_recipe(tmp, entries), out, **kw)
    recs = [json.loads(line) for line in out.read_text().splitlines()]
    assert n == len(recs)
    return recs


def _tags(recs: list[dict[str, Any]]) -> Counter:
    return Counter(r["id"].split("-")[0] for r in recs)


@pytest.fixture
def data(tmp_path: Path) -> Path:
    _dataset(tmp_path / "nd" / "a.jsonl", 10, "a")
    _dataset(tmp_path / "nd" / "b.jsonl", 4, "b")
    return tmp_path


def test_all_rows_fraction_and_absolute_counts(data: Path) -> None:
    recs = _mix(data, [("nd/a.jsonl", 1.0), ("nd/b.jsonl", 1.0)], system_prompt=SYS)
    assert sorted(r["id"] for r in recs) == sorted([f"a-{i}" for i in range(10)] + [f"b-{i}" for i in range(4)])
    assert [r["id"] for r in recs] != [f"a-{i}" for i in range(10)] + [f"b-{i}" for i in range(4)]  # shuffled

    recs = _mix(data, [("nd/a.jsonl", 0.5), ("nd/b.jsonl", 3)], system_prompt=SYS)
    assert _tags(recs) == {"a": 5, "b": 3}
    assert len({r["id"] for r in recs}) == 8  # down-sampling never repeats a row

    recs = _mix(data, [("nd/a.jsonl", 0.35), ("nd/b.jsonl", 4), ("nd/b.jsonl", 0)], system_prompt=SYS)
    assert _tags(recs) == {"a": 3, "b": 4}  # int(10 * 0.35) = 3; a count equal to the rows = all of them


def test_upsampling_draws_with_replacement(data: Path) -> None:
    recs = _mix(data, [("nd/b.jsonl", 11), ("nd/a.jsonl", 2.5)], system_prompt=SYS)
    tags = _tags(recs)
    assert tags == {"b": 11, "a": 25}
    ids = Counter(r["id"] for r in recs)
    assert max(ids.values()) > 1 and set(ids) <= {f"a-{i}" for i in range(10)} | {f"b-{i}" for i in range(4)}


def test_sampling_helpers() -> None:
    import random

    assert sample_count(10, 1.0) == 10 and sample_count(10, 0.29) == 2 and sample_count(10, 30) == 30
    rng = random.Random(0)
    assert sample_indices(5, 5, rng) == [0, 1, 2, 3, 4]
    down = sample_indices(100, 40, rng)
    assert len(set(down)) == 40 and down == sorted(down)
    up = sample_indices(3, 50, rng)
    assert len(up) == 50 and set(up) <= {0, 1, 2}
    with pytest.raises(ValueError):
        sample_indices(0, 1, rng)
    assert sample_indices(0, 0, rng) == []


def test_records_are_training_records(tmp_path: Path) -> None:
    src = tmp_path / "odd.jsonl"
    rows = [
        {"messages": [{"role": "system", "content": "old"}, {"role": "user", "content": "u"},
                      {"role": "assistant", "content": "a"}], "metadata": json.dumps({"keep": 1}),
         "id": "x", "unmask": True, "leaf_node_path": "a->b", "_unit_id": "u1"},
        {"messages": [{"role": "user", "content": "u2"}, {"role": "assistant", "content": "a2"}],
         "metadata": {"as": "dict"}},
        {"messages": [{"role": "user", "content": "u3"}, {"role": "assistant", "content": "   "}], "id": "empty"},
        {"messages": [{"role": "system", "content": "only a system turn"}], "id": "nothing"},
        {"messages": [{"role": "user", "content": "u5"}, {"role": "assistant", "content": None}], "id": "null"},
    ]
    src.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    out = tmp_path / "out.jsonl"
    assert mix_recipe(_recipe(tmp_path, [("odd.jsonl", 1.0)]), out, system_prompt=SYS) == 2
    recs = {r["id"]: r for r in map(json.loads, out.read_text().splitlines())}
    x = recs.pop("x")
    assert list(x) == ["id", "messages", "metadata", "unmask"] and x["unmask"] is True
    assert x["messages"][0] == {"role": "system", "content": SYS} and len(x["messages"]) == 3
    assert json.loads(x["metadata"]) == {"keep": 1, "leaf_node_path": "a->b", "_unit_id": "u1"}
    (derived,) = recs.values()  # no id given: one derived from content
    assert derived["unmask"] is False and json.loads(derived["metadata"]) == {"as": "dict"}
    assert derived["messages"] == [{"role": "system", "content": SYS}, {"role": "user", "content": "u2"},
                                   {"role": "assistant", "content": "a2"}]


def test_system_prompt_comes_from_the_recipe_unless_given(data: Path) -> None:
    recs = _mix(data, [("nd/b.jsonl", 1.0)])
    assert {r["messages"][0]["content"] for r in recs} == {"recipe prompt"}
    (data / "recipe.yaml").write_text(yaml.safe_dump({"datasets": [{"path": "nd/b.jsonl", "sampling_size": 1.0}]}))
    with pytest.raises(SdgError, match="no system prompt"):
        mix_recipe(data / "recipe.yaml", data / "o.jsonl")
    assert mix_recipe(data / "recipe.yaml", data / "o.jsonl", system_prompt=SYS) == 4


def test_same_seed_same_bytes_other_seed_other_order(data: Path) -> None:
    recipe = _recipe(data, [("nd/a.jsonl", 0.7), ("nd/b.jsonl", 9)])
    mix_recipe(recipe, data / "1.jsonl", system_prompt=SYS)
    mix_recipe(recipe, data / "2.jsonl", system_prompt=SYS)
    mix_recipe(recipe, data / "3.jsonl", system_prompt=SYS, seed=3)
    assert (data / "1.jsonl").read_bytes() == (data / "2.jsonl").read_bytes()
    assert (data / "1.jsonl").read_bytes() != (data / "3.jsonl").read_bytes()


def test_absolute_paths_and_recipe_round_trip(data: Path) -> None:
    recipe = data / "sub" / "r.yaml"
    recipe.parent.mkdir()
    write_recipe(recipe, Recipe((RecipeEntry(str(data / "nd" / "a.jsonl"), 3), RecipeEntry("../nd/b.jsonl", 1.0)),
                                "p"))
    spec = read_recipe(recipe)
    assert spec == Recipe((RecipeEntry(str(data / "nd" / "a.jsonl"), 3), RecipeEntry("../nd/b.jsonl", 1.0)), "p")
    assert isinstance(spec.datasets[0].sampling_size, int) and isinstance(spec.datasets[1].sampling_size, float)
    assert mix_recipe(recipe, data / "o.jsonl") == 7


@pytest.mark.parametrize("size", ["all", -1, True, None, float("nan"), [1]])
def test_bad_sampling_size_names_recipe_and_entry(data: Path, size: Any) -> None:
    recipe = _recipe(data, [("nd/a.jsonl", 1.0), ("nd/b.jsonl", size)])
    with pytest.raises(SdgError) as err:
        mix_recipe(recipe, data / "o.jsonl", system_prompt=SYS)
    assert str(recipe) in str(err.value) and "datasets[1] (nd/b.jsonl)" in str(err.value)
    assert "sampling_size" in str(err.value)
    assert not (data / "o.jsonl").exists()


def test_recipe_errors(data: Path) -> None:
    recipe = _recipe(data, [("nd/a.jsonl", 1.0), ("nd/missing.jsonl", 1.0)])
    with pytest.raises(SdgError, match=r"datasets\[1\] \(nd/missing.jsonl\): dataset file not found"):
        mix_recipe(recipe, data / "o.jsonl", system_prompt=SYS)
    with pytest.raises(SdgError, match="recipe file not found"):
        mix_recipe(data / "nope.yaml", data / "o.jsonl", system_prompt=SYS)
    (data / "nd" / "empty.jsonl").write_text("")
    with pytest.raises(SdgError, match=r"datasets\[0\] \(nd/empty.jsonl\): the dataset is empty"):
        mix_recipe(_recipe(data, [("nd/empty.jsonl", 5)]), data / "o.jsonl", system_prompt=SYS)
    assert mix_recipe(_recipe(data, [("nd/empty.jsonl", 1.0)]), data / "o.jsonl", system_prompt=SYS) == 0
    (data / "bad.yaml").write_text("datasets: {path: x}\n")
    with pytest.raises(SdgError, match="datasets"):
        mix_recipe(data / "bad.yaml", data / "o.jsonl", system_prompt=SYS)
    (data / "bad.yaml").write_text("datasets:\n- path: nd/a.jsonl\n  sampling_size: 1.0\n  weight: 2\n")
    with pytest.raises(SdgError, match="unknown keys"):
        mix_recipe(data / "bad.yaml", data / "o.jsonl", system_prompt=SYS)


def test_malformed_dataset_line_names_file_and_line(data: Path) -> None:
    bad = data / "nd" / "bad.jsonl"
    bad.write_text('{"messages": [{"role": "user", "content": "u"}, {"role": "assistant", "content": "a"}]}\n'
                   '\n{not json\n')
    with pytest.raises(SdgError, match=r"bad.jsonl:3"):
        mix_recipe(_recipe(data, [("nd/bad.jsonl", 1.0)]), data / "o.jsonl", system_prompt=SYS)
    bad.write_text('{"messages": "hello"}\n')
    with pytest.raises(SdgError, match=r"bad.jsonl:1: `messages` must be"):
        mix_recipe(_recipe(data, [("nd/bad.jsonl", 1.0)]), data / "o.jsonl", system_prompt=SYS)
    bad.write_text('{"messages": [{"role": "user", "content": "u"}], "unmask": "yes"}\n')
    with pytest.raises(SdgError, match="unmask must be"):
        mix_recipe(_recipe(data, [("nd/bad.jsonl", 1.0)]), data / "o.jsonl", system_prompt=SYS)
    assert not (data / "o.jsonl").exists()
