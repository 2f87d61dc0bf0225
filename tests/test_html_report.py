"""sdg.output.html_report and `sdg data report`, without a browser: the page is one self-contained file,
every section is there with an SVG chart, every tagged number equals the JSON, model output is escaped.

`build_report()` makes a realistic format-2 quality report the way a run will (QualityStats fed with
rows and units, plus hand-made per-leaf counts); tests/test_html_report_browser.py uses it too."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from sdg.errors import OutputError, SdgError
from sdg.output.html_report import SECTIONS, lookup, normalize, render_html, write_html_report
from sdg.output.quality_stats import QualityStats

HOSTILE_RESPONSE = ('</dd></dl></div></section><script>alert("pwned")</script>'
                    '<img src="https://evil.example/x.png" onerror="alert(1)"> & done')
HOSTILE_QUESTION = '<iframe src="http://evil.example/"></iframe><style>body{display:none}</style>'
HOSTILE_LEAF = 'compositional_skills->odd->"<b>bold</b>" & co'
DOTTED_LEAF = "knowledge->science->astronomy->v1.2 eclipses"
HAIKU_LEAF = "compositional_skills->writing->freeform->haiku"
FAILED_LEAF = "foundational_skills->reasoning->unit_conversion"
T0 = 1_750_000_000.0

_WORDS = ("the moon sun light shadow eclipse orbit path quiet river stone leaf wind autumn spring cold warm "
          "bright dark night day morning evening star planet earth totality corona shadow band").split()


def _text(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(_WORDS) for _ in range(n)).capitalize() + "."


def _funnel(c: dict[str, Any]) -> list[list[Any]]:
    """As LeafQuality.funnel computes it (sdg.output.reports), written out here on purpose."""
    dups = sum(n for r, n in c["quality_dropped"].items() if r in ("exact_duplicate", "near_duplicate"))
    return [["generated", c["generated"]], ["judged", c["pipeline_kept"]],
            ["deduplicated", c["pipeline_kept"] - dups], ["kept", c["kept"]]]


def build_report(hostile: bool = True, run_dir: str = "/runs/2026-01-01_000000") -> dict[str, Any]:
    """A format-2 quality report: 4 leaves (one with a hostile id, one with a dot in its id, one that
    failed), rows through QualityStats (with hostile model output when `hostile`), 60 units over 2 minutes."""
    rng = random.Random(1234)
    stats = QualityStats(samples_per_leaf=3)
    leaves: dict[str, dict[str, Any]] = {}
    plan = [  # id, name, kind, units, target, generated, pipeline drops, quality drops
        (HAIKU_LEAF, "haiku", "freeform_skill", 5, 12, 20, {"judge_answer:below_threshold": 6},
         {"near_duplicate": 2, "seed_copy": 1}),
        (DOTTED_LEAF, "eclipses", "knowledge", 6, 20, 14, {"faithful:below_threshold": 7, "dedup:duplicate": 2},
         {"exact_duplicate": 1, "contaminated:mmlu.jsonl": 1}),
        (HOSTILE_LEAF, "odd", "grounded_skill", 4, 12, 12, {"judge_question:below_threshold": 2}, {}),
        (FAILED_LEAF, "units", "freeform_skill", 2, 5, 0, {}, {}),
    ]
    for lid, name, kind, units, target, generated, drops, qdrops in plan:
        pipeline_kept = generated - sum(drops.values())
        kept = pipeline_kept - sum(qdrops.values())
        judge = "judge_faithfulness" if kind == "knowledge" else "judge_answer"
        for i in range(kept):
            row = {"question": _text(rng, rng.randint(6, 25)), "response": _text(rng, rng.randint(20, 180)),
                   judge: rng.choice([2, 3]) if judge == "judge_answer" else 1, "_unit": f"{lid}#{i}",
                   "icl_query_1": "seed question"}
            if kind == "grounded_skill":
                row["context"] = _text(rng, 60)
            if hostile and lid == HOSTILE_LEAF and i == 0:
                row["response"], row["question"] = HOSTILE_RESPONSE, HOSTILE_QUESTION
            stats.kept(lid, row)
        for reason, n in list(drops.items()) + list(qdrops.items()):
            for _ in range(n):
                row = {"question": _text(rng, 10), "response": _text(rng, 40),
                       judge: 0 if judge == "judge_answer" else rng.choice([0, 1])}
                if hostile and lid == HOSTILE_LEAF:
                    row["response"] = HOSTILE_RESPONSE
                stats.dropped(lid, row, reason)
        requests = units * 3
        counts = {"name": name, "kind": kind, "units": units, "target": target, "generated": generated,
                  "kept": kept, "failed_units": units if generated == 0 else 0, "dropped": drops,
                  "requests": requests, "prompt_tokens": requests * 310, "completion_tokens": generated * 45 + 7,
                  "pipeline_kept": pipeline_kept, "quality_dropped": qdrops}
        counts["funnel"] = _funnel(counts)
        leaves[lid] = counts
    t = T0
    for lid, counts in leaves.items():  # the leaf's kept rows spread over its units, 1-3 s apart
        per_unit = [counts["kept"] // counts["units"]] * counts["units"]
        per_unit[0] += counts["kept"] - sum(per_unit)
        for kept in per_unit:
            t += 1 + 2 * rng.random()
            stats.unit(lid, t, kept, counts["prompt_tokens"] // counts["units"],
                       counts["completion_tokens"] // counts["units"])
    for lid in leaves:
        leaves[lid].update(stats.leaf(lid))
    tot = {k: sum(c[k] for c in leaves.values()) for k in ("target", "generated", "kept", "requests",
                                                            "prompt_tokens", "completion_tokens")}
    quality_dropped: dict[str, int] = {}
    for c in leaves.values():
        for r, n in c["quality_dropped"].items():
            quality_dropped[r] = quality_dropped.get(r, 0) + n
    tokens = tot["prompt_tokens"] + tot["completion_tokens"]
    run = {"run_dir": run_dir, **tot, "elapsed_s": 121.5, "tokens_per_kept": round(tokens / tot["kept"], 1),
           "kept_per_1k_tokens": round(tot["kept"] / tokens * 1000, 2), "quality_dropped": quality_dropped,
           "timeline": stats.run()["timeline"], "contamination": {"mmlu.jsonl": 1, "<evil>.jsonl": 0}}
    report = {"format": 2, "run": run, "leaves": leaves}
    return json.loads(json.dumps(report, allow_nan=False))  # exactly what a reader of the file sees


class PageParser(HTMLParser):
    """Tags, attributes, sections (with their svgs and leaves) and data-key elements (with their text)."""

    VOID = {"meta", "link", "br", "img", "input", "hr", "area", "base", "col", "embed", "source", "wbr", "rect",
            "circle", "line", "polyline", "path"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.sections: dict[str, dict[str, Any]] = {}
        self.section_order: list[str] = []
        self.keys: list[tuple[str, str]] = []
        self._section: str | None = None
        self._section_depth = 0
        self._depth = 0
        self._key: tuple[str, list[str]] | None = None
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        self.tags.append((tag, a))
        if tag in self.VOID:
            self._visit(tag, a)
            return
        self._depth += 1
        if "data-section" in a:
            self._section, self._section_depth = a["data-section"], self._depth
            self.section_order.append(a["data-section"])
            self.sections[a["data-section"]] = {"svgs": 0, "leaves": [], "keys": 0}
        self._visit(tag, a)
        if "data-key" in a:
            self._key = (a["data-key"], [])

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        self.tags.append((tag, a))
        self._visit(tag, a)

    def _visit(self, tag: str, a: dict[str, str | None]) -> None:
        if self._section is None:
            return
        sec = self.sections[self._section]
        sec["svgs"] += tag == "svg"
        if "data-leaf" in a:
            sec["leaves"].append(a["data-leaf"])
        sec["keys"] += "data-key" in a

    def handle_endtag(self, tag: str) -> None:
        if tag in self.VOID:
            return
        if self._key is not None:
            self.keys.append((self._key[0], "".join(self._key[1])))
            self._key = None
        if self._section is not None and self._depth == self._section_depth:
            self._section = None
        self._depth -= 1

    def handle_data(self, data: str) -> None:
        self.text.append(data)
        if self._key is not None:
            self._key[1].append(data)


def parse(page: str) -> PageParser:
    p = PageParser()
    p.feed(page)
    p.close()
    return p


@pytest.fixture(scope="module")
def report() -> dict[str, Any]:
    return build_report()


@pytest.fixture(scope="module")
def page(report: dict[str, Any]) -> str:
    return render_html(report)


def test_page_is_self_contained(page: str) -> None:
    p = parse(page)
    assert p.tags[0][0] == "html"
    for tag, attrs in p.tags:
        assert tag not in ("script", "iframe", "img", "object", "embed", "frame", "audio", "video", "base"), tag
        assert "src" not in attrs and "srcset" not in attrs and not any(k.startswith("on") for k in attrs), (tag, attrs)
        for name, value in attrs.items():
            assert "://" not in (value or ""), (tag, name, value)
        if tag == "link":
            assert attrs.get("href", "").startswith("data:"), attrs
        if tag == "a":
            assert attrs.get("href", "").startswith("#"), attrs
    assert "@import" not in page and "url(" not in page
    csp = [a["content"] for t, a in p.tags if t == "meta" and a.get("http-equiv") == "Content-Security-Policy"]
    assert csp and "default-src 'none'" in csp[0]
    # without model output that holds URLs, no URL at all
    clean = render_html(build_report(hostile=False))
    assert "http://" not in clean and "https://" not in clean and "src=" not in clean


def test_every_section_present_once_with_an_svg_chart(page: str, report: dict[str, Any]) -> None:
    p = parse(page)
    assert p.section_order == list(SECTIONS)
    for name, sec in p.sections.items():
        assert sec["svgs"] >= 1, name
    for name in ("funnel", "judge_scores", "lengths", "distinct", "samples"):
        assert sorted(p.sections[name]["leaves"]) == sorted(report["leaves"]), name
    # the svgs have a size of their own
    for tag, attrs in p.tags:
        if tag == "svg":
            assert int(attrs["width"]) > 0 and int(attrs["height"]) > 0 and attrs["viewbox"].startswith("0 0 ")


def test_tagged_numbers_equal_the_json(page: str, report: dict[str, Any]) -> None:
    p = parse(page)
    assert len(p.keys) > 100
    for key, text in p.keys:
        value = lookup(report, key)
        assert isinstance(value, (int, float)) and not isinstance(value, bool), key
        assert text == json.dumps(value), (key, text, value)
    keys = {k for k, _ in p.keys}
    run_keys = {f"run.{k}" for k in ("kept", "target", "generated", "requests", "prompt_tokens", "completion_tokens",
                                     "elapsed_s", "tokens_per_kept", "kept_per_1k_tokens")}
    assert run_keys <= keys
    assert {"run.quality_dropped.near_duplicate", "run.contamination.mmlu.jsonl", "run.contamination.<evil>.jsonl",
            f"run.timeline.{len(report['run']['timeline']) - 1}.completion_tokens"} <= keys
    for lid, leaf in report["leaves"].items():
        base = f"leaves.{lid}."
        assert {base + k for k in ("kept", "target", "units", "failed_units", "requests", "prompt_tokens",
                                   "completion_tokens")} <= keys, lid
        assert {f"{base}funnel.{i}.1" for i in range(4)} <= keys
        for col, scores in leaf["judge_scores"].items():
            assert {f"{base}judge_scores.{col}.{s}" for s in scores} <= keys
        if leaf["kept"]:
            assert {f"{base}lengths.{c}.{s}" for c in ("question", "response")
                    for s in ("count", "mean", "p50", "p90", "max")} <= keys
            assert {base + "distinct.distinct_1", base + "distinct.distinct_2"} <= keys
        assert {f"{base}dropped.{r}" for r in leaf["dropped"]} <= keys
        assert {f"{base}quality_dropped.{r}" for r in leaf["quality_dropped"]} <= keys


def test_worst_leaves_come_first(page: str, report: dict[str, Any]) -> None:
    leaves = report["leaves"]
    expected = sorted(leaves, key=lambda lid: (leaves[lid]["kept"] / leaves[lid]["target"], lid))
    assert expected[0] == FAILED_LEAF and expected[1] == DOTTED_LEAF
    for section in ("funnel", "lengths", "samples"):
        assert parse(page).sections[section]["leaves"] == expected


def test_model_output_and_odd_names_are_text_not_markup(page: str, report: dict[str, Any]) -> None:
    assert '<script>alert("pwned")</script>' not in page and "<iframe" not in page and "<b>bold</b>" not in page
    assert "&lt;script&gt;alert(&quot;pwned&quot;)&lt;/script&gt;" in page
    p = parse(page)
    text = "".join(p.text)
    assert HOSTILE_RESPONSE in text and HOSTILE_QUESTION in text  # shown, as text
    assert HOSTILE_LEAF in p.sections["samples"]["leaves"]
    assert "<evil>.jsonl" in text
    assert sum(1 for t, _ in p.tags if t == "style") == 1  # only the page's own stylesheet


def test_rendering_is_deterministic_and_takes_a_format_1_report(report: dict[str, Any]) -> None:
    assert render_html(report) == render_html(json.loads(json.dumps(report)))
    legacy = {lid: {k: v for k, v in leaf.items() if k in ("kind", "units", "target", "generated", "kept",
                                                          "failed_units", "dropped", "requests", "completion_tokens")}
              for lid, leaf in report["leaves"].items()}
    p = parse(render_html(legacy))
    assert p.section_order == list(SECTIONS) and all(s["svgs"] for s in p.sections.values())
    for key, text in p.keys:
        assert text == json.dumps(lookup(normalize(legacy), key))
    empty = parse(render_html({"format": 2, "run": {}, "leaves": {}}))
    assert all(s["svgs"] for s in empty.sections.values())


def test_lookup_resolves_dotted_ids_and_refuses_unknown_paths(report: dict[str, Any]) -> None:
    assert lookup(report, f"leaves.{DOTTED_LEAF}.kept") == report["leaves"][DOTTED_LEAF]["kept"]
    assert lookup(report, "run.contamination.mmlu.jsonl") == 1
    assert lookup(report, f"leaves.{HAIKU_LEAF}.funnel.0.1") == 20
    for bad in ("run.nope", "leaves.x.kept", f"leaves.{HAIKU_LEAF}.funnel.9.1"):
        with pytest.raises(KeyError):
            lookup(report, bad)


def test_write_html_report_writes_atomically(tmp_path: Path, report: dict[str, Any]) -> None:
    (tmp_path / "quality_report.json").write_text(json.dumps(report), encoding="utf-8")
    out = write_html_report(tmp_path)
    assert out == tmp_path / "quality_report.html"
    assert out.read_text(encoding="utf-8") == render_html(report)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["quality_report.html", "quality_report.json"]


def test_missing_or_broken_json_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(OutputError) as err:
        write_html_report(tmp_path)
    assert str(tmp_path / "quality_report.json") in str(err.value) and "sdg data generate" in str(err.value)
    assert isinstance(err.value, SdgError)
    (tmp_path / "quality_report.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(OutputError, match="cannot be read"):
        write_html_report(tmp_path)
    (tmp_path / "quality_report.json").write_text("[1, 2]", encoding="utf-8")
    with pytest.raises(OutputError, match="not a quality report"):
        write_html_report(tmp_path)
    assert not (tmp_path / "quality_report.html").exists()


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "sdg", *args], env=env, capture_output=True, text=True, timeout=120)


def test_cli_data_report_writes_the_page_and_fails_cleanly_without_json(
        tmp_path: Path, sdg_env: dict[str, str], report: dict[str, Any]) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "quality_report.json").write_text(json.dumps(report), encoding="utf-8")
    ok = _cli(sdg_env, "data", "report", str(run_dir))
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.strip() == str(run_dir / "quality_report.html")
    assert (run_dir / "quality_report.html").read_text(encoding="utf-8") == render_html(report)

    empty = tmp_path / "empty"
    empty.mkdir()
    bad = _cli(sdg_env, "data", "report", str(empty))
    assert bad.returncode == 1 and bad.stdout == ""
    lines = bad.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "quality_report.json" in lines[0], bad.stderr
    assert "Traceback" not in bad.stderr and not (empty / "quality_report.html").exists()
    assert os.listdir(empty) == []
