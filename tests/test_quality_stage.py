"""The run-wide quality stage (sdg.quality) on planted rows with known answers: exact and near duplicates
across leaves, seed copies in their own leaf only, evaluation-set contamination, each switch, determinism,
evaluation-set errors, and measured near-duplicate recall/precision. No teacher, no network."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import FrozenInstanceError
from pathlib import Path

import pytest

from sdg.config.schema import QualityConfig
from sdg.errors import ConfigError
from sdg.quality import REASONS, Drop, QualityStage, row_text
from sdg.quality.near import bands_for
from sdg.quality.planted import TextMaker, near_copy, planted_corpus, shingle_jaccard, sibling
from sdg.quality.text import words


@pytest.fixture
def maker() -> TextMaker:
    return TextMaker(seed=7)


def offer_all(stage: QualityStage, rows: list[tuple[str, dict]]) -> list[Drop | None]:
    return [stage.offer(leaf, row) for leaf, row in rows]


def joined(row: dict[str, str]) -> str:
    return f"{row['question']}\n{row['response']}"


def test_row_text_is_question_and_response_not_context() -> None:
    row = {"question": "Q?", "response": "A.", "context": "the chunk", "_unit": "u1", "judge_score": 3}
    assert row_text(row) == "Q?\nA."
    assert row_text({"question": None}) == "\n"


def test_drop_is_frozen_with_a_known_reason() -> None:
    d = Drop("exact_duplicate", "same as row 1 of leaf a")
    with pytest.raises(FrozenInstanceError):
        d.reason = "x"  # type: ignore[misc]
    assert set(REASONS) == {"exact_duplicate", "near_duplicate", "seed_copy", "contaminated"}


def test_distinct_rows_on_shared_topics_are_all_kept(maker: TextMaker) -> None:
    rows = [(f"leaf{i % 5}", maker.row(topic=i % 3)) for i in range(400)]  # 3 topics: many shared words
    stage = QualityStage(QualityConfig())
    assert offer_all(stage, rows) == [None] * len(rows)


def test_exact_copies_across_and_within_leaves(maker: TextMaker) -> None:
    row = maker.row(topic=1)
    variant = {"question": "  " + row["question"].upper().replace(" ", "   ") + "!!",
               "response": row["response"].replace(".", " ;").replace(" ", "\n", 3),
               "context": "another chunk", "judge_score": 1}
    stage = QualityStage(QualityConfig())
    assert stage.offer("knowledge/a", maker.row(topic=1)) is None
    assert stage.offer("knowledge/a", row) is None  # the leaf's row 2
    drop = stage.offer("skills/b", variant)
    assert drop == Drop("exact_duplicate", "same as row 2 of leaf knowledge/a")
    assert stage.offer("knowledge/a", dict(row)) == drop  # within the leaf too


def test_small_edits_and_sentence_swaps_are_near_duplicates_across_leaves(maker: TextMaker) -> None:
    base = maker.row(topic=2)
    sents = [s.strip() + "." for s in base["response"].split(".") if s.strip()]
    swapped = {"question": base["question"], "response": " ".join(sents[:-2] + [sents[-1], sents[-2]])}
    edited = {"question": base["question"].replace(base["question"].split()[3], "zebra"),
              "response": base["response"]}
    edited2 = near_copy(base, maker, topic=2)
    assert min(shingle_jaccard(base, r) for r in (swapped, edited, edited2)) >= 0.85
    stage = QualityStage(QualityConfig())
    assert stage.offer("leaf/a", base) is None
    for leaf, row in (("leaf/b", swapped), ("leaf/c", edited), ("leaf/d", edited2)):
        drop = stage.offer(leaf, row)
        assert drop is not None and drop.reason == "near_duplicate", (leaf, drop)
        assert drop.detail.startswith("similarity 0.") and drop.detail.endswith("to row 1 of leaf leaf/a")
        assert float(drop.detail.split()[1]) >= 0.8


def test_same_topic_siblings_are_kept(maker: TextMaker) -> None:
    base = maker.row(topic=4)
    sibs = [sibling(base, maker, topic=4) for _ in range(20)]  # half its question, 3 of its 5 sentences
    assert max(shingle_jaccard(base, s) for s in sibs) <= 0.6
    stage = QualityStage(QualityConfig(exact_dedup=False, seed_copy=False))
    assert stage.offer("a", base) is None
    assert [stage.offer("b", s) for s in sibs] == [None] * len(sibs)


def test_seed_copies_are_dropped_only_in_their_own_leaf(maker: TextMaker) -> None:
    seeds_a = [maker.row(topic=5) for _ in range(3)]
    seeds_b = [maker.row(topic=5)]
    stage = QualityStage(QualityConfig(), seeds={"leaf/a": [joined(s) for s in seeds_a],
                                                 "leaf/b": [joined(s) for s in seeds_b]})
    copy = near_copy(seeds_a[1], maker, topic=5)
    drop = stage.offer("leaf/a", copy)
    assert drop is not None and drop.reason == "seed_copy"
    assert drop.detail.startswith("similarity ") and drop.detail.endswith("to seed 2")
    assert stage.offer("leaf/b", copy) is None  # leaf A's seed is no seed of leaf B
    assert stage.offer("leaf/none", near_copy(seeds_a[0], maker, topic=5)) is None  # a leaf without seeds

    # the question alone: the seed's question with a new answer
    same_question = {"question": seeds_a[0]["question"].lower(), "response": maker.row(topic=5)["response"]}
    drop = stage.offer("leaf/a", same_question)
    assert drop is not None and drop.reason == "seed_copy" and drop.detail.startswith("question similarity 1.00")
    assert drop.detail.endswith("to seed 1")

    # a short question sharing only "what is the" with a seed is no copy
    short_seed = {"question": "What is the capital of France?", "response": "Paris is the capital of France."}
    stage = QualityStage(QualityConfig(), seeds={"s": [joined(short_seed)]})
    assert stage.offer("s", {"question": "What is the tallest tree?", "response": maker.row(6)["response"]}) is None
    drop = stage.offer("s", {"question": "what is the capital of france", "response": "Paris."})
    assert drop is not None and drop.reason == "seed_copy"


def write_jsonl(path: Path, items: list[dict]) -> Path:
    path.write_text("".join(json.dumps(i) + "\n" for i in items), encoding="utf-8")
    return path


def test_rows_quoting_an_evaluation_set_are_contaminated_and_counted_per_set(tmp_path: Path,
                                                                             maker: TextMaker) -> None:
    items_a = [maker.row(topic=8) for _ in range(30)]
    items_b = [maker.row(topic=9) for _ in range(30)]
    mmlu = write_jsonl(tmp_path / "mmlu.jsonl", [{"question": i["question"], "answer": i["response"], "id": 3}
                                                 for i in items_a])
    gsm = tmp_path / "gsm.json"
    gsm.write_text(json.dumps([i["response"] for i in items_b] + [{"choices": ["alpha beta", "gamma"]}]))
    txt = tmp_path / "short.txt"
    txt.write_text("\nthe quick brown fox jumps\n\n", encoding="utf-8")  # one item shorter than 13 words
    stage = QualityStage(QualityConfig(decontaminate=[str(mmlu), str(gsm), str(txt)]))
    assert stage.contamination == {"mmlu.jsonl": 0, "gsm.json": 0, "short.txt": 0}

    def quoting(item: dict[str, str], start: int, n: int) -> dict[str, str]:
        row = maker.row(topic=8)
        row["response"] += " " + " ".join(item["response"].split()[start:start + n])
        return row

    clean = [maker.row(topic=8) for _ in range(50)]
    assert offer_all(stage, [("a", r) for r in clean]) == [None] * 50
    drop = stage.offer("a", quoting(items_a[3], 5, 15))  # 15 words: three 13-grams
    assert drop == Drop("contaminated", "eval set mmlu.jsonl: 3 shared 13-grams")
    assert stage.offer("b", quoting(items_a[4], 0, 12)) is None  # 12 words: no 13-gram
    drop = stage.offer("b", quoting(items_b[0], 2, 20))
    assert drop is not None and drop.detail == "eval set gsm.json: 8 shared 13-grams"
    drop = stage.offer("c", {"question": "Who says The quick, brown fox jumps?", "response": "Nobody."})
    assert drop == Drop("contaminated", "eval set short.txt: 1 shared 13-grams")
    assert stage.contamination == {"mmlu.jsonl": 1, "gsm.json": 1, "short.txt": 1}

    strict = QualityStage(QualityConfig(decontaminate=[str(mmlu)], decontaminate_min_overlap=4))
    assert strict.offer("a", quoting(items_a[3], 5, 15)) is None  # 3 shared < 4
    assert strict.offer("a", quoting(items_a[3], 5, 16)).reason == "contaminated"  # type: ignore[union-attr]


def test_each_switch_turns_its_filter_off(tmp_path: Path, maker: TextMaker) -> None:
    base, other = maker.row(topic=10), maker.row(topic=10)
    seed = maker.row(topic=10)
    item = maker.row(topic=11)
    evalset = write_jsonl(tmp_path / "eval.jsonl", [{"text": item["response"]}])
    exact = {"question": base["question"].upper(), "response": base["response"]}
    near = near_copy(other, maker, topic=10)
    seed_copy = near_copy(seed, maker, topic=10)
    contaminated = dict(maker.row(topic=10))
    contaminated["response"] += " " + item["response"]
    rows = [("a", base), ("a", other), ("b", exact), ("b", near), ("s", seed_copy), ("c", contaminated)]
    seeds = {"s": [joined(seed)]}

    def reasons(**kw: object) -> list[str | None]:
        cfg = QualityConfig(**{"decontaminate": [str(evalset)], **kw})  # type: ignore[arg-type]
        stage = QualityStage(cfg, seeds=seeds)
        return [d.reason if d else None for d in offer_all(stage, rows)]

    assert reasons() == [None, None, "exact_duplicate", "near_duplicate", "seed_copy", "contaminated"]
    assert reasons(exact_dedup=False) == [None, None, "near_duplicate", "near_duplicate", "seed_copy",
                                          "contaminated"]
    assert reasons(near_dedup=False) == [None, None, "exact_duplicate", None, "seed_copy", "contaminated"]
    assert reasons(exact_dedup=False, near_dedup=False)[2] is None
    assert reasons(seed_copy=False)[4] is None
    assert reasons(decontaminate=[])[5] is None
    assert reasons(enabled=False) == [None] * len(rows)


def test_same_rows_same_order_same_decisions_in_any_process() -> None:
    corpus = planted_corpus(bases=300, near=100, siblings=50, leaves=5, seed=3)
    rows = [(p.leaf, p.row) for p in corpus]
    seeds = {"leaf0": [joined(corpus[0].row)]}
    first = offer_all(QualityStage(QualityConfig(), seeds=seeds), rows)
    assert offer_all(QualityStage(QualityConfig(), seeds=seeds), rows) == first
    assert sum(d is not None for d in first) >= 90
    # another process, another str hash salt: the same decisions (stable hashes and MinHash seed)
    code = ("import json, sys\nfrom sdg.config.schema import QualityConfig\nfrom sdg.quality import QualityStage\n"
            "from sdg.quality.planted import planted_corpus\n"
            "c = planted_corpus(bases=300, near=100, siblings=50, leaves=5, seed=3)\n"
            "seed = c[0].row['question'] + '\\n' + c[0].row['response']\n"
            "s = QualityStage(QualityConfig(), seeds={'leaf0': [seed]})\n"
            "print(json.dumps([[d.reason, d.detail] if d else None for d in (s.offer(p.leaf, p.row) for p in c)]))\n")
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == [[d.reason, d.detail] if d else None for d in first]


@pytest.mark.parametrize(("name", "content", "where"), [
    ("bad.jsonl", '{"question": "fine"}\n\n{"question": oops}\n', "bad.jsonl:3: not JSON"),
    ("num.jsonl", '{"question": "fine"}\n42\n', "num.jsonl:2: expected a JSON object or string, found int"),
    ("bad.json", '[\n  {"question": "fine"},\n  {"question": \n]\n', "bad.json:4: not JSON"),
    ("obj.json", '{"question": "not a list"}', "obj.json: expected a JSON list"),
    ("latin.txt", b"fine line\n\xff\xfe broken\n", "latin.txt:2: not UTF-8"),
    ("eval.csv", "a,b\n", "eval.csv: unknown evaluation set format '.csv'"),
    ("empty.jsonl", '{"id": 1}\n', "empty.jsonl holds no text items"),
])
def test_a_malformed_evaluation_set_is_a_config_error_naming_file_and_line(tmp_path: Path, name: str,
                                                                           content: str | bytes, where: str) -> None:
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    with pytest.raises(ConfigError) as e:
        QualityStage(QualityConfig(decontaminate=[str(path)]))
    assert str(tmp_path) in str(e.value) and where in str(e.value)


def test_a_missing_evaluation_set_is_a_config_error_naming_it(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "mmlu.jsonl"
    with pytest.raises(ConfigError, match=r"quality\.decontaminate: .*nowhere/mmlu\.jsonl: no such file"):
        QualityStage(QualityConfig(decontaminate=[str(missing)]))
    with pytest.raises(ConfigError, match="not a file"):
        QualityStage(QualityConfig(decontaminate=[str(tmp_path)]))


@pytest.fixture(scope="module")
def planted() -> list:
    corpus = planted_corpus(bases=2000, near=500, siblings=200, leaves=20, seed=0)
    assert sum(p.kind == "near" for p in corpus) == 500
    return corpus


def recall_precision(corpus: list, cfg: QualityConfig) -> tuple[float, float, list]:
    stage = QualityStage(cfg)
    drops = [stage.offer(p.leaf, p.row) for p in corpus]
    near = [d is not None and d.reason == "near_duplicate" for d in drops]
    planted = [p.kind == "near" for p in corpus]
    hits = sum(n and p for n, p in zip(near, planted))
    return hits / sum(planted), hits / max(1, sum(near)), drops


def test_near_duplicate_recall_and_precision_on_a_planted_corpus(planted: list) -> None:
    recall, precision, drops = recall_precision(planted, QualityConfig())
    assert recall >= 0.9, recall
    assert precision >= 0.95, precision
    assert all(d is None for d, p in zip(drops, planted) if p.kind != "near")  # bases and siblings all kept


def test_the_recall_and_precision_check_can_fail(planted: list) -> None:
    """Controls: the same measurement with a threshold too strict (planted copies missed) and too loose
    (same-topic siblings, shingle Jaccard 0.2-0.4, dropped) falls below the bounds asserted above."""
    recall, _, _ = recall_precision(planted, QualityConfig(near_dedup_threshold=0.9))
    assert recall < 0.9
    _, precision, _ = recall_precision(planted, QualityConfig(near_dedup_threshold=0.3))
    assert precision < 0.95


def test_lsh_bands_catch_pairs_at_the_threshold() -> None:
    for threshold, num_perm in ((0.8, 128), (0.5, 64), (0.9, 256), (0.8, 100)):
        b = bands_for(threshold, num_perm)
        assert num_perm % b == 0
        assert 1 - (1 - threshold ** (num_perm // b)) ** b >= 0.9
    assert bands_for(0.8, 128) == 16


def test_normalized_words() -> None:
    assert words("Hello,  WORLD!\n It's—“quoted” e.g. 3.14") == ["hello", "world", "it", "s", "quoted", "e", "g",
                                                                  "3", "14"]
    assert words("snake_case") == ["snake", "case"] == words("snäke_case".replace("ä", "a"))
