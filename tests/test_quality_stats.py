"""sdg.output.quality_stats: the streaming accumulator behind the quality report's statistics."""

from __future__ import annotations

import json
import random

import pytest

from sdg.output.quality_stats import DISTINCT_K, LENGTH_EDGES, SAMPLE_CHARS, TIMELINE_POINTS, QualityStats


def _words(n: int, word: str = "w") -> str:
    return " ".join(f"{word}{i}" for i in range(n))


def _bin(n: int) -> int:
    return max(i for i, edge in enumerate(LENGTH_EDGES) if n >= edge)


def test_lengths_histogram_and_percentiles_in_words() -> None:
    stats = QualityStats()
    questions = [3, 7, 7, 12, 2500]
    for n in questions:
        stats.kept("a", {"question": _words(n), "response": "one two  three\nfour"})
    lengths = stats.leaf("a")["lengths"]
    q = lengths["question"]
    assert q["count"] == 5 and q["max"] == 2500 and q["p50"] == 7 and q["p90"] == 2500
    assert q["mean"] == pytest.approx(sum(questions) / 5, abs=0.01)
    assert q["histogram"]["edges"] == list(LENGTH_EDGES)
    expected = [0] * len(LENGTH_EDGES)
    for n in questions:
        expected[_bin(n)] += 1
    assert q["histogram"]["counts"] == expected
    assert expected[0] == 1 and expected[1] == 2 and expected[-1] == 1  # 0-4, 5-9, 2000 and up
    r = lengths["response"]
    assert (r["count"], r["p50"], r["p90"], r["max"], r["mean"]) == (5, 4, 4, 4, 4.0)


def test_empty_leaf_has_zero_counts_and_no_averages() -> None:
    leaf = QualityStats().leaf("never-fed")
    assert leaf["judge_scores"] == {}
    assert leaf["lengths"]["question"]["count"] == 0 and leaf["lengths"]["question"]["mean"] is None
    assert sum(leaf["lengths"]["response"]["histogram"]["counts"]) == 0
    assert leaf["distinct"]["distinct_1"] is None and leaf["distinct"]["distinct_2"] is None
    assert leaf["samples"] == {"kept": [], "dropped": []}
    assert QualityStats().run() == {"timeline": []}


def test_distinct_n_on_a_known_text() -> None:
    stats = QualityStats()
    stats.kept("a", {"question": "q", "response": "The cat the cat the dog"})
    # unigrams: the cat the cat the dog -> 3 unique of 6; bigrams: the-cat cat-the the-cat cat-the the-dog -> 3 of 5
    d = stats.leaf("a")["distinct"]
    assert d["distinct_1"] == 0.5 and d["distinct_2"] == 0.6
    assert d["responses"] == 1 and d["words"] == 6
    # n-grams never span two responses; dropped rows do not count
    stats.kept("a", {"question": "q", "response": "dog the"})
    stats.dropped("a", {"question": "q", "response": "brand new words here"}, "judge:below_threshold")
    d = stats.leaf("a")["distinct"]
    assert d["distinct_1"] == pytest.approx(3 / 8, abs=1e-4) and d["distinct_2"] == pytest.approx(4 / 6, abs=1e-4)


def test_distinct_n_memory_is_bounded_and_estimate_close() -> None:
    stats = QualityStats()
    # 40k unique unigrams and 40k unique bigrams: far past the sketch size K, so it estimates
    for i in range(400):
        stats.kept("big", {"question": "q", "response": _words(100, f"r{i}x")})
    internals = stats._leaves["big"].distinct
    assert len(internals[1]._kept) == DISTINCT_K and len(internals[1]._heap) == DISTINCT_K
    d = stats.leaf("big")["distinct"]
    assert d["distinct_1"] == pytest.approx(1.0, abs=0.05)
    assert d["distinct_2"] == pytest.approx(1.0, abs=0.05)
    # and a repetitive leaf past K stays low: 20k distinct words, each twice -> 0.5
    rep = QualityStats()
    for i in range(200):
        text = _words(100, f"z{i}x")
        rep.kept("rep", {"question": "q", "response": text + " " + text})
    assert rep.leaf("rep")["distinct"]["distinct_1"] == pytest.approx(0.5, rel=0.06)


def test_distinct_sketch_is_the_k_smallest_hashes_whatever_the_order() -> None:
    """n-grams are kept as they are until K distinct ones were seen, then hashed: the sketch must hold exactly
    the K smallest hashes of every distinct n-gram seen, as hashing each one as it came would."""
    from sdg.output.quality_stats import _Distinct, _hash64

    words = [f"w{i % 3000}" for i in range(12_000)]  # 3000 distinct, each 4 times
    pairs = list(zip(words, words[1:]))
    for k in (64, 5000):  # past K (sketch) and below it (exact)
        uni, bi = _Distinct(k), _Distinct(k)
        for i in range(0, len(words), 97):
            uni.add_all(words[i:i + 97])
            bi.add_all(pairs[i:i + 97])
        want_uni = sorted({_hash64(w) for w in words})[:k]
        want_bi = sorted({_hash64(f"{a}\x1f{b}") for a, b in pairs})[:k]
        if k < 3000:
            assert sorted(uni._kept) == want_uni and sorted(bi._kept) == want_bi
        assert uni.total == len(words) and bi.total == len(pairs)
        assert uni.distinct() == pytest.approx(3000, rel=0.3 if k < 3000 else 0)


def test_samples_bounded_truncated_and_limited_to_text_and_judge_columns() -> None:
    stats = QualityStats(samples_per_leaf=2)
    long = "x" * (SAMPLE_CHARS + 500)
    for i in range(10):
        stats.kept("a", {"question": f"q{i}", "response": long, "context": "ctx", "judge_answer": 2,
                         "_unit": "engine column", "document": "a long document", "icl_query_1": "seed"})
        stats.dropped("a", {"question": f"dq{i}", "response": "r", "judge_question": 0}, f"reason{i}")
    samples = stats.leaf("a")["samples"]
    assert [r["question"] for r in samples["kept"]] == ["q0", "q1"]
    assert set(samples["kept"][0]) == {"question", "response", "context", "judge_answer"}
    assert len(samples["kept"][0]["response"]) == SAMPLE_CHARS + 1 and samples["kept"][0]["response"].endswith("…")
    assert samples["dropped"] == [{"reason": "reason0", "row": {"question": "dq0", "response": "r", "judge_question": 0}},
                                  {"reason": "reason1", "row": {"question": "dq1", "response": "r", "judge_question": 0}}]
    assert QualityStats(samples_per_leaf=0).leaf("a")["samples"] == {"kept": [], "dropped": []}
    with pytest.raises(ValueError):
        QualityStats(samples_per_leaf=-1)


def test_judge_score_columns_found_in_kept_and_dropped_rows() -> None:
    stats = QualityStats()
    stats.kept("a", {"question": "q", "response": "r", "judge_answer": 2, "judge_question": 1})
    stats.kept("a", {"question": "q", "response": "r", "judge_answer": 2, "judge_question": "1"})
    stats.dropped("a", {"question": "q", "response": "r", "judge_answer": 0}, "judge_answer:below_threshold")
    stats.dropped("a", {"question": "q", "response": "r", "judge_answer": None, "judge_question": "n/a",
                        "judge_x": 1.5, "judge_y": True}, "judge_answer:unparsed")
    stats.dropped("b", {"question": "q", "response": "r", "judge_faithfulness": 1.0, "score": 3}, "faithful")
    assert stats.leaf("a")["judge_scores"] == {"judge_answer": {"0": 1, "2": 2}, "judge_question": {"1": 2}}
    assert stats.leaf("b")["judge_scores"] == {"judge_faithfulness": {"1": 1}}
    assert stats.leaf_ids() == ["a", "b"]


def test_timeline_is_bounded_cumulative_and_ends_at_the_totals() -> None:
    stats = QualityStats()
    rng = random.Random(7)
    t0 = 1_700_000_000.0
    times = sorted(t0 + rng.uniform(0, 3600) for _ in range(10_000))
    times[0] = t0
    kept_total = tokens_total = 0
    for i, t in enumerate(times):
        kept, tokens = i % 3, 100 + i % 50
        kept_total += kept
        tokens_total += tokens
        stats.unit(f"leaf{i % 4}", t, kept, 10, tokens)
    timeline = stats.run()["timeline"]
    assert 10 <= len(timeline) <= TIMELINE_POINTS
    assert timeline[0]["t_s"] >= 0 and timeline[-1]["t_s"] == pytest.approx(times[-1] - t0, abs=1e-3)
    last = timeline[-1]
    assert (last["units"], last["kept"], last["completion_tokens"]) == (10_000, kept_total, tokens_total)
    for a, b in zip(timeline, timeline[1:]):
        assert a["t_s"] < b["t_s"] and a["units"] < b["units"] and a["kept"] <= b["kept"]
    json.dumps(stats.run(), allow_nan=False)


def test_timeline_takes_units_out_of_order_and_long_gaps() -> None:
    stats = QualityStats()
    stats.unit("a", 1000.0, 1, 5, 10)
    stats.unit("a", 999.5, 1, 5, 10)  # finished earlier, journaled later
    stats.unit("a", 1000.0 + 86_400, 2, 5, 20)  # resumed a day later
    timeline = stats.run()["timeline"]
    assert timeline[0] == {"t_s": 0.0, "units": 1, "kept": 1, "completion_tokens": 10}
    assert timeline[-1] == {"t_s": 86_400.5, "units": 3, "kept": 4, "completion_tokens": 40}
    assert len(timeline) == 3


def test_results_are_json_even_for_odd_cells() -> None:
    stats = QualityStats()
    stats.kept("a", {"question": None, "response": 42, "context": {"nested": [1, 2]}, "judge_answer": float("nan")})
    stats.dropped("a", {"question": "q", "response": float("inf")}, "bad")
    leaf = stats.leaf("a")
    text = json.dumps(leaf, allow_nan=False)
    assert leaf["samples"]["kept"][0]["context"] == "{'nested': [1, 2]}"
    assert leaf["lengths"]["question"]["max"] == 0 and leaf["lengths"]["response"]["max"] == 1
    assert json.loads(text) == leaf
