#!/usr/bin/env python3
"""Scale benchmark: `sdg taxonomy diff` (diff + validation) against InstructLab's algorithm on N leaves.

A program that prints figures, not a test. It

1. generates, deterministically from `--seed`, a taxonomy git repository with N v3 leaves (freeform and
   grounded compositional skills, foundational skills, knowledge leaves with a `document:` block that is
   never fetched), a few percent of them broken in varied ways, spread over a base commit on `main`, a
   `feature` branch (several commits, a rename, deletions), staged, unstaged and untracked changes, so
   that the diff against `main` lists every one of the N leaves;
2. times ours: `sdg taxonomy diff --format json` as a subprocess (process start-up and config included)
   and `sdg.taxonomy.api.diff_taxonomy(cfg)` in-process;
3. times the anchor: InstructLab's diff algorithm (emulated with gitpython: untracked files, then a
   `git branch -a --contains` per first-parent step from HEAD until a commit on the base branch, then
   `commit.diff(None)`) plus `instructlab.schema.taxonomy.TaxonomyParser.parse` on the listed files --
   all of them, or a random sample (`--anchor-sample K`) whose per-file time is extrapolated;
4. compares verdicts (file has an error or not) for every file both sides checked, and exits 1 on any
   disagreement (2 if a diff lists the wrong files, 3 if a side could not run).

Run from the repository root with the project's virtual environment:

    .venv/bin/python benchmarks/validate_scale.py                    # 5000 leaves, anchor sample 500
    .venv/bin/python benchmarks/validate_scale.py --leaves 300 --anchor-sample 0   # small, anchor on all

Uses only the standard library and what the venv holds (gitpython, instructlab-schema, yamllint, sdg).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import random
import re
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

VENV_BIN = Path(sys.executable).parent
BASE_BRANCH = "main"
DOC_REPO = "https://github.com/example/docs"
ANCHOR_ROOTS = ("compositional_skills", "knowledge")  # the folders InstructLab's diff looks at

# --------------------------------------------------------------------------------------------------------
# Text generation
# --------------------------------------------------------------------------------------------------------

WORDS = """
able about above across after again against air along also always among animal answer area around
balance base become before begin behind below best better between big bird black blue board boat body
book bottom box bread bridge bright bring brown build busy call came capital care carry cause center
certain change chart check child city class clear close cloud coast cold color common company compare
complete contain control corner country course cover cross current cycle dark data decide deep degree
design detail develop differ direct distance divide doctor draw dry during early earth east edge effect
energy engine enough equal even event every example exact face fact family farm fast field figure final
fire first fish floor flow follow force forest form found free fresh front fruit full game garden gather
general glass gold grass great green ground group grow half hand happen hard heat heavy help high hill
history hold home hour house human idea inch include island iron join keep kind king land language large
last late layer lead learn leave letter level light line list little long machine main major make map mark
market match matter measure metal method middle mile milk mind minute model moment money month moon
morning motion mountain move music nation natural near need never next night noise north note number object
ocean offer office open order other page paper part pass path pattern people period person picture piece
place plain plan plant point position power present press price print problem produce product program
property provide public pull purpose question quick quiet rain range rate reach read ready reason record
region remember report rest result river road rock room round rule safe salt same sand school science sea
season second section seed select sense serve settle shape share ship shore short side sign simple size
skill small snow soft soil solution sound source south space special speed spring square stand star start
state station steel step stone store story straight stream street strong student study subject summer sun
supply surface system table tail teach team test thing third thought time together tool total town track
trade train travel tree trip true type unit valley value village visit voice wait water wave weather week
weight west wheel white whole wide wind window winter wood word work world write year young
""".split()

DOMAINS = ["Astronomy", "Botany", "Chemistry", "Economics", "Geology", "History", "Linguistics",
           "Medicine", "Music theory", "Oceanography", "Physics", "Zoology", "Law", "Computing"]
SKILL_CATS = ["writing", "extraction", "reasoning", "coding", "linguistics", "roleplay", "summarization",
              "classification", "planning", "translation"]
FOUND_CATS = ["reasoning", "mathematics", "coding", "linguistics"]
KNOW_CATS = ["science", "history", "technology", "geography", "arts", "economics", "medicine"]
QWORDS = ["What", "How", "Why", "Which", "When", "Where", "Who"]


def words(rng: random.Random, lo: int, hi: int) -> list[str]:
    return [rng.choice(WORDS) for _ in range(rng.randint(lo, hi))]


def sentence(rng: random.Random, lo: int = 8, hi: int = 20) -> str:
    w = words(rng, lo, hi)
    return " ".join(w).capitalize() + "."


def paragraph(rng: random.Random, n_words: int) -> str:
    out: list[str] = []
    total = 0
    while total < n_words:
        s = sentence(rng)
        out.append(s)
        total += s.count(" ") + 1
    return " ".join(out)


def question(rng: random.Random, lo: int = 8, hi: int = 20) -> str:
    return f"{rng.choice(QWORDS)} {' '.join(words(rng, lo, hi))}?"


def block(text: str, width: int = 88) -> str:
    """A block-scalar value: wrapped lines ending in a newline."""
    return textwrap.fill(text, width) + "\n"


def username(rng: random.Random) -> str:
    return f"{rng.choice(WORDS)}_{rng.choice(WORDS)}{rng.randint(1, 99)}"


# --------------------------------------------------------------------------------------------------------
# Leaf contents and a small YAML emitter with a fixed, yamllint-clean style (the skeleton's style)
# --------------------------------------------------------------------------------------------------------


def skill_leaf(rng: random.Random, grounded: bool, n_seeds: int = 5) -> dict[str, Any]:
    seeds = []
    for _ in range(n_seeds):
        seed: dict[str, Any] = {}
        if grounded:
            seed["context"] = block(paragraph(rng, rng.randint(40, 120)))
        seed["question"] = question(rng)
        seed["answer"] = block(paragraph(rng, rng.randint(25, 90)))
        seeds.append(seed)
    return {"version": 3, "created_by": username(rng),
            "task_description": sentence(rng, 10, 24), "seed_examples": seeds}


def knowledge_leaf(rng: random.Random, name: str, n_seeds: int = 5, n_qna: int = 3) -> dict[str, Any]:
    seeds = []
    for _ in range(n_seeds):
        qna = [{"question": question(rng, 6, 16), "answer": sentence(rng, 6, 30)} for _ in range(n_qna)]
        seeds.append({"context": block(paragraph(rng, rng.randint(80, 200))), "questions_and_answers": qna})
    return {"version": 3, "created_by": username(rng), "domain": rng.choice(DOMAINS),
            "document_outline": sentence(rng, 15, 30), "seed_examples": seeds,
            "document": {"repo": DOC_REPO, "commit": f"{rng.getrandbits(160):040x}",
                         "patterns": [f"docs/{name}.md"]}}


def _scalar(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if v == "":
        return '""'
    return str(v)


def emit(obj: Any, indent: int = 0) -> list[str]:
    pad = " " * indent
    lines: list[str] = []
    if isinstance(obj, dict):
        for k, v in obj.items():
            if isinstance(v, dict):
                lines.append(f"{pad}{k}:")
                lines.extend(emit(v, indent + 2))
            elif isinstance(v, list):
                lines.append(f"{pad}{k}:")
                lines.extend(emit(v, indent + 2))
            elif isinstance(v, str) and "\n" in v:
                lines.append(f"{pad}{k}: |")
                lines.extend(f"{pad}  {ln}" if ln else "" for ln in v.rstrip("\n").split("\n"))
            else:
                lines.append(f"{pad}{k}: {_scalar(v)}")
    elif isinstance(obj, list):
        for item in obj:
            if isinstance(item, (dict, list)):
                sub = emit(item, indent + 2)
                sub[0] = f"{pad}- {sub[0][indent + 2:]}"
                lines.extend(sub)
            else:
                lines.append(f"{pad}- {_scalar(item)}")
    return lines


def render(data: dict[str, Any]) -> str:
    return "\n".join(emit(data)) + "\n"


# --------------------------------------------------------------------------------------------------------
# Breakages: (name, leaf types it applies to, data mutation or None, text mutation or None).
# Every one is an error for InstructLab and for us. Kinds where we are deliberately stricter (empty file,
# non-text keys, unsafe document URLs...) are left out: they would be "disagreements" by design.
# --------------------------------------------------------------------------------------------------------

SKILLS = ("freeform", "grounded", "foundational")
KNOW = ("knowledge",)
ALL = SKILLS + KNOW


def _first_line(text: str, pattern: str) -> int:
    lines = text.split("\n")
    for i, ln in enumerate(lines):
        if re.match(pattern, ln):
            return i
    raise ValueError(f"no line matches {pattern!r}")


def _edit_line(text: str, pattern: str, fn: Callable[[str], str]) -> str:
    lines = text.split("\n")
    i = _first_line(text, pattern)
    lines[i] = fn(lines[i])
    return "\n".join(lines)


def _insert_after(text: str, pattern: str, new: list[str]) -> str:
    lines = text.split("\n")
    i = _first_line(text, pattern)
    return "\n".join(lines[: i + 1] + new + lines[i + 1:])


def d_too_few_seeds(d: dict, rng: random.Random) -> None:
    d["seed_examples"] = d["seed_examples"][: rng.choice([2, 3, 4])]


def d_too_few_qna(d: dict, rng: random.Random) -> None:
    seed = d["seed_examples"][rng.randrange(5)]
    seed["questions_and_answers"] = seed["questions_and_answers"][:2]


def d_wrong_type_created_by(d: dict, rng: random.Random) -> None:
    d["created_by"] = rng.randint(1000, 99999)


def d_wrong_type_answer(d: dict, rng: random.Random) -> None:
    if "questions_and_answers" in d["seed_examples"][0]:
        d["seed_examples"][1]["questions_and_answers"][0]["answer"] = rng.randint(2, 500)
    else:
        d["seed_examples"][1]["answer"] = rng.randint(2, 500)


def d_wrong_type_seeds(d: dict, rng: random.Random) -> None:
    d["seed_examples"] = "TODO add seed examples"


def d_unknown_top_key(d: dict, rng: random.Random) -> None:
    d["author"] = username(rng)


def d_unknown_seed_key(d: dict, rng: random.Random) -> None:
    d["seed_examples"][rng.randrange(len(d["seed_examples"]))]["explanation"] = sentence(rng)


def d_misspelt_key(d: dict, rng: random.Random) -> None:
    typo = {"task_description": "task_descripton", "document_outline": "document_outlines"}
    items = list(d.items())
    d.clear()
    d.update((typo.get(k, k), v) for k, v in items)


def d_unknown_document_key(d: dict, rng: random.Random) -> None:
    d["document"]["branch"] = "main"


def d_missing_key(d: dict, rng: random.Random) -> None:
    del d["task_description" if "task_description" in d else "document_outline"]


def d_missing_document(d: dict, rng: random.Random) -> None:
    del d["document"]


def d_empty_value(d: dict, rng: random.Random) -> None:
    if "domain" in d:
        d["domain"] = ""
    else:
        d["seed_examples"][2]["answer"] = ""


def d_duplicate_seed(d: dict, rng: random.Random) -> None:
    d["seed_examples"][4] = json.loads(json.dumps(d["seed_examples"][0]))


def d_old_version(d: dict, rng: random.Random) -> None:
    d["version"] = 2  # knowledge v2 is deprecated in instructlab-schema


def t_trailing_spaces(text: str, rng: random.Random) -> str:
    lines = text.split("\n")
    cand = [i for i, ln in enumerate(lines) if ln.strip()]
    i = rng.choice(cand)
    lines[i] += " " * rng.randint(1, 3)
    return "\n".join(lines)


def t_colon_spaces(text: str, rng: random.Random) -> str:
    return _edit_line(text, r"created_by: ", lambda ln: ln.replace(": ", ":   ", 1))


def t_duplicate_key(text: str, rng: random.Random) -> str:
    return _insert_after(text, r"created_by: ", [f"created_by: {username(rng)}"])


def t_blank_lines(text: str, rng: random.Random) -> str:
    return _insert_after(text, r"created_by: ", ["", "", "", ""])


def t_no_final_newline(text: str, rng: random.Random) -> str:
    return text.rstrip("\n")


def t_document_indent(text: str, rng: random.Random) -> str:
    lines = text.split("\n")
    i = _first_line(text, r"document:")
    for j in range(i + 1, len(lines)):
        if lines[j]:
            lines[j] = "  " + lines[j]
    return "\n".join(lines)


def t_hyphen_spaces(text: str, rng: random.Random) -> str:
    return _edit_line(text, r"    - docs/", lambda ln: ln.replace("- ", "-   ", 1))


def t_syntax_colon_in_plain(text: str, rng: random.Random) -> str:
    return _edit_line(text, r"\s+(- )?question: ",
                      lambda ln: ln.rstrip("?") + ": answer in one word?")


def t_syntax_unclosed_quote(text: str, rng: random.Random) -> str:
    key = r"task_description: " if "task_description:" in text else r"document_outline: "
    return _edit_line(text, key, lambda ln: ln.replace(": ", ': "', 1))


def t_syntax_tab(text: str, rng: random.Random) -> str:
    return _edit_line(text, r"    answer: ", lambda ln: "\t" + ln.lstrip(" "))


def t_syntax_dedent(text: str, rng: random.Random) -> str:
    return _edit_line(text, r"    (answer|questions_and_answers):", lambda ln: ln[1:])


@dataclass(frozen=True)
class Breakage:
    name: str
    applies: tuple[str, ...]
    data: Callable[[dict, random.Random], None] | None = None
    text: Callable[[str, random.Random], str] | None = None


BREAKAGES: tuple[Breakage, ...] = (
    Breakage("schema:too-few-seeds", ALL, data=d_too_few_seeds),
    Breakage("schema:too-few-qna", KNOW, data=d_too_few_qna),
    Breakage("schema:wrong-type-created_by", ALL, data=d_wrong_type_created_by),
    Breakage("schema:wrong-type-answer", ALL, data=d_wrong_type_answer),
    Breakage("schema:wrong-type-seed_examples", ALL, data=d_wrong_type_seeds),
    Breakage("schema:unknown-top-key", ALL, data=d_unknown_top_key),
    Breakage("schema:unknown-seed-key", ALL, data=d_unknown_seed_key),
    Breakage("schema:misspelt-key", ALL, data=d_misspelt_key),
    Breakage("schema:unknown-document-key", KNOW, data=d_unknown_document_key),
    Breakage("schema:missing-key", ALL, data=d_missing_key),
    Breakage("schema:missing-document", KNOW, data=d_missing_document),
    Breakage("schema:empty-value", ALL, data=d_empty_value),
    Breakage("schema:duplicate-seed", ALL, data=d_duplicate_seed),
    Breakage("schema:deprecated-version-2", KNOW, data=d_old_version),
    Breakage("yamllint:trailing-spaces", ALL, text=t_trailing_spaces),
    Breakage("yamllint:colon-spaces", ALL, text=t_colon_spaces),
    Breakage("yamllint:duplicate-key", ALL, text=t_duplicate_key),
    Breakage("yamllint:blank-lines", ALL, text=t_blank_lines),
    Breakage("yamllint:no-final-newline", ALL, text=t_no_final_newline),
    Breakage("yamllint:bad-indentation", KNOW, text=t_document_indent),
    Breakage("yamllint:hyphen-spaces", KNOW, text=t_hyphen_spaces),
    Breakage("syntax:colon-in-plain-scalar", ALL, text=t_syntax_colon_in_plain),
    Breakage("syntax:unclosed-quote", ALL, text=t_syntax_unclosed_quote),
    Breakage("syntax:tab-indent", SKILLS, text=t_syntax_tab),
    Breakage("syntax:dedented-key", ALL, text=t_syntax_dedent),
)


def w_mixed_seeds(d: dict, rng: random.Random) -> None:
    for s in d["seed_examples"][3:]:
        s.pop("context", None)


def w_extra_qna(d: dict, rng: random.Random) -> None:
    d["seed_examples"][0]["questions_and_answers"].append({"question": question(rng, 6, 16), "answer": sentence(rng)})


# Valid for both (warnings only for us): checks that our warnings do not flip verdicts.
WARN_ONLY: tuple[Breakage, ...] = (
    Breakage("warning:mixed-grounded-freeform", ("grounded",), data=w_mixed_seeds),
    Breakage("warning:4-qna-per-seed", KNOW, data=w_extra_qna),
)

# --------------------------------------------------------------------------------------------------------
# Taxonomy repository generation
# --------------------------------------------------------------------------------------------------------


@dataclass
class Leaf:
    index: int
    kind: str  # freeform | grounded | foundational | knowledge
    rel: str
    text: str = ""
    breakage: str = ""  # an error kind, a warning-only kind, or ""
    old_text: str = ""  # content on main (base leaves), or an intermediate version

    @property
    def expect_invalid(self) -> bool:
        return bool(self.breakage) and not self.breakage.startswith("warning:")


@dataclass
class Generated:
    root: Path
    leaves: list[Leaf]
    deleted: list[str]
    renamed: list[tuple[str, str]]
    groups: dict[str, int] = field(default_factory=dict)


def leaf_path(rng: random.Random, kind: str, i: int) -> str:
    leaf = f"{rng.choice(WORDS)}_{rng.choice(WORDS)}_{i:05d}"
    sub = "/".join(rng.choice(WORDS) for _ in range(rng.randint(1, 2)))
    if kind in ("freeform", "grounded"):
        return f"compositional_skills/{rng.choice(SKILL_CATS)}/{kind}/{sub}/{leaf}/qna.yaml"
    if kind == "foundational":
        return f"foundational_skills/{rng.choice(FOUND_CATS)}/{sub}/{leaf}/qna.yaml"
    return f"knowledge/{rng.choice(KNOW_CATS)}/{sub}/{leaf}/qna.yaml"


def leaf_content(rng: random.Random, kind: str, rel: str) -> dict[str, Any]:
    if kind == "knowledge":
        return knowledge_leaf(rng, rel.split("/")[-2])
    return skill_leaf(rng, grounded=(kind == "grounded") or (kind == "foundational" and rng.random() < 0.2))


def plan_leaves(n: int, seed: int, broken_pct: float, warn_pct: float) -> list[Leaf]:
    rng = random.Random(seed)
    kinds = rng.choices(["freeform", "grounded", "foundational", "knowledge"], weights=[35, 25, 10, 30], k=n)
    leaves = [Leaf(i, k, leaf_path(rng, k, i)) for i, k in enumerate(kinds)]
    n_broken = min(n, max(round(n * broken_pct / 100), min(len(BREAKAGES), n // 10)))
    n_warn = min(n - n_broken, max(round(n * warn_pct / 100), min(len(WARN_ONLY), n // 50)))
    pool = list(range(n))
    rng.shuffle(pool)
    used: set[int] = set()

    def assign(kinds_list: tuple[Breakage, ...], count: int) -> None:
        for j in range(count):
            b = kinds_list[j % len(kinds_list)]
            for idx in pool:
                if idx not in used and leaves[idx].kind in b.applies:
                    used.add(idx)
                    leaves[idx].breakage = b.name
                    break

    assign(BREAKAGES, n_broken)
    assign(WARN_ONLY, n_warn)
    by_name = {b.name: b for b in BREAKAGES + WARN_ONLY}
    for leaf in leaves:
        lr = random.Random(f"{seed}:{leaf.index}")
        data = leaf_content(lr, leaf.kind, leaf.rel)
        b = by_name.get(leaf.breakage)
        if b and b.data:
            b.data(data, lr)
        text = render(data)
        if b and b.text:
            text = b.text(text, lr)
        leaf.text = text
        leaf.old_text = render(leaf_content(random.Random(f"{seed}:{leaf.index}:old"), leaf.kind, leaf.rel))
    return leaves


GIT_ENV = {"GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": os.devnull, "GIT_AUTHOR_NAME": "bench",
           "GIT_AUTHOR_EMAIL": "bench@example.invalid", "GIT_COMMITTER_NAME": "bench",
           "GIT_COMMITTER_EMAIL": "bench@example.invalid"}


class GitRepo:
    def __init__(self, root: Path) -> None:
        self.root, self.tick = root, 0

    def __call__(self, *args: str) -> str:
        env = {**os.environ, **GIT_ENV}
        if args and args[0] == "commit":  # fixed dates: the same --seed gives the same commit ids
            self.tick += 1
            stamp = f"2024-06-01T12:{self.tick:02d}:00+00:00"
            env.update(GIT_AUTHOR_DATE=stamp, GIT_COMMITTER_DATE=stamp)
        return subprocess.run(["git", "-c", "commit.gpgsign=false", *args], cwd=self.root, env=env,
                              check=True, text=True, capture_output=True).stdout


def write(root: Path, rel: str, text: str) -> None:
    p = root / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text, encoding="utf-8")


def generate(root: Path, n: int, seed: int, broken_pct: float, warn_pct: float) -> Generated:
    """The repository: `main` (base), `feature` (HEAD) with committed, staged, unstaged and untracked
    changes such that every one of the N leaves differs from the fork point."""
    leaves = plan_leaves(n, seed, broken_pct, warn_pct)
    rng = random.Random(f"{seed}:git")
    order = list(range(n))
    rng.shuffle(order)
    small = max(2, n // 100)
    n_base = max(small * 2, n // 5)
    base = order[:n_base]                        # exist on main with other content; rewritten on feature
    unstaged = base[:small]                      # ... rewritten again in the work tree only
    n_ren = max(1, n // 1000)
    renamed_idx = order[n_base:n_base + n_ren]   # exist on main with final content elsewhere; `git mv`
    new = order[n_base + n_ren:]
    staged, untracked, committed = new[:small], new[small:2 * small], new[2 * small:]
    n_del = max(2, n // 1000)
    deleted = [f"compositional_skills/retired/leaf_{k:03d}/qna.yaml" for k in range(n_del)]
    renamed = [(f"compositional_skills/moved_from/leaf_{leaves[i].index:05d}/qna.yaml", leaves[i].rel)
               for i in renamed_idx]

    git = GitRepo(root)
    root.mkdir(parents=True, exist_ok=True)
    git("init", "-q", "-b", BASE_BRANCH)
    write(root, "README.md", "# Benchmark taxonomy\n")
    for i in base:
        write(root, leaves[i].rel, leaves[i].old_text)
    for (old, _), i in zip(renamed, renamed_idx):
        write(root, old, leaves[i].text)
    for k, rel in enumerate(deleted):
        write(root, rel, render(skill_leaf(random.Random(f"{seed}:del:{k}"), grounded=False)))
    git("add", "-A")
    git("commit", "-q", "-m", "base taxonomy")
    git("checkout", "-q", "-b", "feature")
    for i in base:  # commit 2: rewrite base leaves, delete, rename
        write(root, leaves[i].rel, leaves[i].text if i not in unstaged else leaves[i].old_text + "# draft\n")
    git("rm", "-q", *deleted)
    for old, new_rel in renamed:
        (root / new_rel).parent.mkdir(parents=True, exist_ok=True)
        git("mv", old, new_rel)
    git("add", "-A")
    git("commit", "-q", "-m", "rework existing leaves")
    batches = 3
    for b in range(batches):  # commits 3..5: new leaves
        for i in committed[b::batches]:
            write(root, leaves[i].rel, leaves[i].text)
        git("add", "-A")
        git("commit", "-q", "-m", f"new leaves, batch {b + 1}")
    git("checkout", "-q", BASE_BRANCH)  # main moves on after the fork
    write(root, "README.md", "# Benchmark taxonomy\n\nMain moved on after the fork.\n")
    git("commit", "-q", "-am", "docs on main")
    git("checkout", "-q", "feature")
    for i in staged:
        write(root, leaves[i].rel, leaves[i].text)
    git("add", *[leaves[i].rel for i in staged])
    for i in untracked:
        write(root, leaves[i].rel, leaves[i].text)
    for i in unstaged:
        write(root, leaves[i].rel, leaves[i].text)
    groups = {"modified on feature (committed)": n_base - small, "modified (unstaged)": small,
              "renamed": n_ren, "added (committed)": len(committed), "added (staged)": small,
              "untracked": small, "deleted (not listed)": n_del}
    return Generated(root, leaves, deleted, renamed, groups)


# --------------------------------------------------------------------------------------------------------
# Ours
# --------------------------------------------------------------------------------------------------------


def rel_to(root: Path, p: str) -> str:
    path = Path(p)
    if path.is_absolute():
        try:
            return Path(os.path.realpath(path)).relative_to(root).as_posix()
        except ValueError:
            return path.as_posix()
    return path.as_posix()


def cpu_now() -> float:
    """CPU seconds of this process and of its waited-for children: less swayed than wall time by other
    jobs on a shared machine (the anchor's cost is mostly yamllint child processes)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


@dataclass
class OursRun:
    label: str
    seconds: float
    cpu: float
    changed: list[str]
    invalid: set[str]
    errors: int = 0
    warnings: int = 0


def run_ours_cli(root: Path) -> OursRun:
    sdg = VENV_BIN / "sdg"
    cmd = [str(sdg) if sdg.exists() else (shutil.which("sdg") or "sdg"), "taxonomy", "diff",
           "--taxonomy-path", str(root), "--taxonomy-base", BASE_BRANCH, "--format", "json"]
    t0, c0 = time.perf_counter(), cpu_now()
    proc = subprocess.run(cmd, cwd=root, capture_output=True, text=True)
    dt, dc = time.perf_counter() - t0, cpu_now() - c0
    if proc.returncode not in (0, 1) or not proc.stdout.strip():
        raise RuntimeError(f"`{' '.join(cmd)}` exited {proc.returncode}: {proc.stderr.strip()[-2000:]}")
    out = json.loads(proc.stdout)
    invalid = {rel_to(root, f["path"]) for f in out["findings"] if f["severity"] == "error"}
    if (proc.returncode == 1) != bool(invalid):
        raise RuntimeError(f"exit code {proc.returncode} does not match {len(invalid)} files with errors")
    return OursRun("sdg taxonomy diff (CLI subprocess)", dt, dc, list(out["changed"]), invalid,
                   out.get("errors", 0), out.get("warnings", 0))


def run_ours_api(root: Path) -> OursRun:
    try:
        from sdg.config.compose import compose_config, to_object
        from sdg.taxonomy.api import diff_taxonomy
    except ImportError:
        compose_config = None  # type: ignore[assignment]
    t0, c0 = time.perf_counter(), cpu_now()
    if compose_config is not None:
        cfg = to_object(compose_config([f"taxonomy.path='{root}'", f"taxonomy.base={BASE_BRANCH}"]))
        report = diff_taxonomy(cfg)
        changed, result, label = report.diff.changed, report.validation, "diff_taxonomy(cfg) in-process"
    else:  # the API moved: fall back to the two library calls
        from sdg.taxonomy.diff import taxonomy_diff
        from sdg.taxonomy.validate import ValidationOptions, validate_files
        d = taxonomy_diff(root, BASE_BRANCH)
        result = validate_files([root / p for p in d.changed], root, ValidationOptions())
        changed, label = d.changed, "taxonomy_diff + validate_files in-process"
    dt, dc = time.perf_counter() - t0, cpu_now() - c0
    invalid = {rel_to(root, str(f.path)) for f in result.files if not f.ok}
    return OursRun(label, dt, dc, list(changed), invalid, result.errors, result.warnings)


# --------------------------------------------------------------------------------------------------------
# The anchor: InstructLab's diff algorithm (emulated) and instructlab-schema's parser (the real one)
# --------------------------------------------------------------------------------------------------------


def anchor_is_taxonomy_file(rel: str) -> bool:
    parts = rel.split("/")
    return len(parts) >= 2 and parts[0] in ANCHOR_ROOTS and parts[-1] == "qna.yaml"


def anchor_diff(root: Path, base: str) -> tuple[list[str], int]:
    """InstructLab's `get_taxonomy_diff` algorithm, reimplemented from its description: untracked files,
    then walk first parents from HEAD with one `git branch -a --contains` each until a commit the base
    branch contains, then the diff from that commit to the work tree. Returns (files, walk steps)."""
    import git

    repo = git.Repo(root)
    untracked = [u for u in repo.untracked_files if anchor_is_taxonomy_file(u)]
    fork = None
    if "/" in base:
        branch_re = re.compile(f"remotes/{base}$", re.MULTILINE)
    elif base in [b.name for b in repo.branches]:
        branch_re = re.compile(f"{base}$", re.MULTILINE)
    else:
        fork = repo.commit(base)
    steps = 0
    if fork is None:
        current = repo.commit("HEAD")
        while fork is None:
            steps += 1
            if branch_re.findall(repo.git.branch("-a", "--contains", current.hexsha)):
                fork = current
                break
            if not current.parents:
                raise RuntimeError(f'Couldn\'t find the taxonomy base branch "{base}" from the current HEAD')
            current = current.parents[0]
    modified = [d.b_path for d in fork.diff(None) if not d.deleted_file and anchor_is_taxonomy_file(d.b_path)]
    return list(set(untracked) | set(modified)), steps


class AnchorValidator:
    """ilab's per-file validation: a TaxonomyParser(schema_version=0, LOGGING, yamllint_strict) per file."""

    def __init__(self, root: Path) -> None:
        from instructlab.schema.taxonomy import TaxonomyParser, TaxonomyReadingException

        self.Parser, self.ReadingError, self.root = TaxonomyParser, TaxonomyReadingException, root
        # ilab logs each finding through Python logging; format them as ilab does, into the void.
        log = logging.getLogger("instructlab.schema.taxonomy")
        self._sink = open(os.devnull, "w")
        handler = logging.StreamHandler(self._sink)
        handler.setFormatter(logging.Formatter("%(levelname)s %(asctime)s %(name)s:%(lineno)d: %(message)s"))
        log.handlers[:] = [handler]
        log.propagate = False
        log.setLevel(logging.INFO)

    def invalid(self, rel: str) -> tuple[bool, str]:
        parser = self.Parser(schema_version=0, message_format="logging", yamllint_strict=True)
        parser.yq_available = False  # /usr/bin/yq here is not mikefarah's yq; without it lines are 1 (favours the anchor)
        try:
            tax = parser.parse(self.root / rel)
        except self.ReadingError as exc:
            return True, f"TaxonomyReadingException: {str(exc.__cause__ or exc).splitlines()[0][:100]}"
        return tax.errors > 0, f"{tax.errors} errors, {tax.warnings} warnings"


# --------------------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------------------


def rate(files: int, seconds: float) -> float:
    return files / seconds if seconds > 0 else float("inf")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--leaves", type=int, default=5000, help="number of leaves the diff lists (default 5000)")
    ap.add_argument("--seed", type=int, default=20240601, help="generator seed (default 20240601)")
    ap.add_argument("--broken-pct", type=float, default=3.0, help="percent of leaves broken (default 3)")
    ap.add_argument("--warn-pct", type=float, default=1.0,
                    help="percent of leaves valid but with our warnings (default 1)")
    ap.add_argument("--anchor-sample", type=int, default=500,
                    help="files the anchor validates, drawn at random; 0 = all (default 500)")
    ap.add_argument("--extra-verdicts", type=int, default=1, choices=(0, 1),
                    help="1 (default): also run the anchor, untimed, on every planted broken/warning file "
                         "and some foundational leaves outside the timed sample, for verdicts only")
    ap.add_argument("--repeat", type=int, default=1, help="runs of each of ours (best is reported; default 1)")
    ap.add_argument("--workdir", type=Path, help="where to build the taxonomy (default: a temp dir, removed)")
    ap.add_argument("--keep", action="store_true", help="keep the generated taxonomy")
    args = ap.parse_args(argv)
    if args.leaves < 50:
        ap.error("--leaves must be at least 50")

    os.environ["PATH"] = f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}"
    yamllint_bin = shutil.which("yamllint")
    if not yamllint_bin:
        print("error: no `yamllint` on PATH; the anchor would silently skip linting", file=sys.stderr)
        return 3
    try:
        import instructlab.schema  # noqa: F401
        import git  # noqa: F401
    except ImportError as exc:
        print(f"error: {exc}; run with the project's venv (.venv/bin/python)", file=sys.stderr)
        return 3

    command = "python " + " ".join([Path(sys.argv[0]).as_posix(), *(argv if argv is not None else sys.argv[1:])])
    print(f"# validate_scale: {command}")
    print(f"# {platform.platform()} | python {platform.python_version()} | {os.cpu_count()} cpus | "
          f"yamllint {yamllint_bin}")

    tmp = None
    if args.workdir:
        work = args.workdir.resolve()
        if work.exists() and any(work.iterdir()):
            ap.error(f"--workdir {work} is not empty")
    else:
        tmp = tempfile.mkdtemp(prefix="sdg-bench-")
        work = Path(tmp)
    root = Path(os.path.realpath(work / "taxonomy"))
    try:
        return run(args, root, yamllint_bin, command)
    finally:
        if tmp and not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
        elif args.keep or args.workdir:
            print(f"# taxonomy kept in {root}")


def run(args: argparse.Namespace, root: Path, yamllint_bin: str, command: str) -> int:
    load_start = os.getloadavg()
    # 1. generate --------------------------------------------------------------------------------------
    t0 = time.perf_counter()
    gen = generate(root, args.leaves, args.seed, args.broken_pct, args.warn_pct)
    t_gen = time.perf_counter() - t0
    leaves = {lf.rel: lf for lf in gen.leaves}
    n = len(leaves)
    kinds = Counter(lf.kind for lf in gen.leaves)
    broken = [lf for lf in gen.leaves if lf.expect_invalid]
    warn_only = [lf for lf in gen.leaves if lf.breakage.startswith("warning:")]
    sizes = sorted(len(lf.text.encode()) for lf in gen.leaves)
    print(f"\n## taxonomy: {n} leaves in {root} (generated in {t_gen:.1f} s)")
    print(f"   kinds: " + ", ".join(f"{k} {v}" for k, v in sorted(kinds.items())))
    print(f"   git:   " + ", ".join(f"{k} {v}" for k, v in gen.groups.items()))
    print(f"   sizes: median {sizes[len(sizes) // 2]:,} B, max {sizes[-1]:,} B, total {sum(sizes) / 1e6:.1f} MB")
    print(f"   planted: {len(broken)} broken ({100 * len(broken) / n:.1f}%) in {len({b.breakage for b in broken})} "
          f"ways, {len(warn_only)} valid with warnings only")
    for name, c in sorted(Counter(lf.breakage for lf in broken + warn_only).items()):
        print(f"     {c:4d}  {name}")

    expected_all = set(leaves)
    expected_anchor = {r for r in expected_all if anchor_is_taxonomy_file(r)}
    status = 0

    # 2. ours --------------------------------------------------------------------------------------------
    print("\n## ours")
    ours_runs: dict[str, list[OursRun]] = {"cli": [], "api": []}
    for rep in range(args.repeat):
        for key, fn in (("cli", run_ours_cli), ("api", run_ours_api)):
            try:
                r = fn(root)
            except Exception as exc:  # noqa: BLE001 - report, keep going with the other side
                print(f"   {key}: FAILED: {type(exc).__name__}: {exc}")
                continue
            ours_runs[key].append(r)
            print(f"   {r.label:40s} run {rep + 1}: {r.seconds:7.2f} s  {rate(len(r.changed), r.seconds):8.1f} files/s"
                  f"  (cpu {r.cpu:.2f} s = {rate(len(r.changed), r.cpu):.1f} files/cpu-s)"
                  f"  ({len(r.changed)} files, {len(r.invalid)} invalid, {r.errors} errors, {r.warnings} warnings)")
    best = {k: min(v, key=lambda r: r.seconds) for k, v in ours_runs.items() if v}
    if not best:
        print("error: ours did not run", file=sys.stderr)
        return 3
    ours = best.get("cli") or best["api"]
    for r in best.values():
        if set(r.changed) != expected_all:
            status = 2
            print(f"   DIFF MISMATCH ({r.label}): missing {sorted(expected_all - set(r.changed))[:5]}, "
                  f"extra {sorted(set(r.changed) - expected_all)[:5]}")
    if "cli" in best and "api" in best and best["cli"].invalid != best["api"].invalid:
        status = 1
        print(f"   CLI and in-process verdicts differ on {len(best['cli'].invalid ^ best['api'].invalid)} files")
    expected_invalid = {lf.rel for lf in broken}
    missed = sorted(expected_invalid - ours.invalid)
    surprise = sorted(ours.invalid - expected_invalid)
    print(f"   vs planted: {len(expected_invalid & ours.invalid)}/{len(expected_invalid)} broken flagged; "
          f"missed {len(missed)}, unexpected {len(surprise)}")
    for rel in missed[:10] + surprise[:10]:
        print(f"     {leaves[rel].breakage or 'valid':34s} {rel}")

    # 3. the anchor --------------------------------------------------------------------------------------
    print("\n## anchor (InstructLab): diff algorithm emulated with gitpython + instructlab-schema TaxonomyParser")
    t0, c0 = time.perf_counter(), cpu_now()
    anchor_files, steps = anchor_diff(root, BASE_BRANCH)
    t_adiff, c_adiff = time.perf_counter() - t0, cpu_now() - c0
    m = len(anchor_files)
    print(f"   diff: {m} files in {t_adiff:.2f} s ({steps} `git branch -a --contains` steps); "
          f"foundational_skills/ is not looked at ({n - m} of ours)")
    if set(anchor_files) != expected_anchor:
        status = 2
        print(f"   DIFF MISMATCH (anchor): missing {sorted(expected_anchor - set(anchor_files))[:5]}, "
              f"extra {sorted(set(anchor_files) - expected_anchor)[:5]}")
    validator = AnchorValidator(root)
    rng = random.Random(f"{args.seed}:sample")
    ordered = sorted(anchor_files)
    k = m if args.anchor_sample <= 0 or args.anchor_sample >= m else args.anchor_sample
    sample = ordered if k == m else rng.sample(ordered, k)
    verdicts: dict[str, tuple[bool, str]] = {}
    cwd = os.getcwd()
    os.chdir(root)  # ilab runs from where the user is; relative paths in its messages
    try:
        t0, c0 = time.perf_counter(), cpu_now()
        for i, rel in enumerate(sample, 1):
            verdicts[rel] = validator.invalid(rel)
            if i % 100 == 0 or i == k:
                el = time.perf_counter() - t0
                print(f"   parse {i:5d}/{k}: {el:7.1f} s  ({rate(i, el):.1f} files/s)", flush=True)
        t_parse, c_parse = time.perf_counter() - t0, cpu_now() - c0
        # untimed, verdicts only: planted files outside the sample, and foundational leaves (not listed)
        extra: list[str] = []
        if args.extra_verdicts:
            found = sorted(r for r in expected_all if r.startswith("foundational_skills/"))
            extra = sorted({lf.rel for lf in broken + warn_only} - set(sample))
            extra += [r for r in random.Random(f"{args.seed}:found").sample(found, min(25, len(found)))
                      if r not in extra]
            t1 = time.perf_counter()
            extra_verdicts = {rel: validator.invalid(rel) for rel in extra}
            print(f"   untimed verdict-only parse of {len(extra)} more files "
                  f"(planted outside the sample + foundational): {time.perf_counter() - t1:.1f} s")
        else:
            extra_verdicts = {}
    finally:
        os.chdir(cwd)
    per_file = t_parse / k
    t_anchor = t_adiff + per_file * m
    anchor_rate = rate(m, t_anchor)
    c_anchor = c_adiff + c_parse / k * m
    anchor_cpu_rate = rate(m, c_anchor)
    extrap = k < m
    print(f"   parse: {k} files in {t_parse:.1f} s = {per_file * 1000:.1f} ms/file"
          + (f"; extrapolated to {m} files: {per_file * m:.1f} s" if extrap else ""))
    print(f"   total (diff + parse{', extrapolated' if extrap else ''}): {t_anchor:.1f} s -> {anchor_rate:.2f} files/s"
          f"  (cpu: diff {c_adiff:.1f} s + parse {c_parse / k * 1000:.1f} ms/file = {c_anchor:.1f} s -> "
          f"{anchor_cpu_rate:.2f} files/cpu-s)")

    # 4. verdicts ----------------------------------------------------------------------------------------
    print("\n## verdicts (invalid = ours: an error finding; anchor: errors > 0 or TaxonomyReadingException)")
    disagree: list[tuple[str, bool, bool, str]] = []
    agree = 0
    for rel, (a_bad, why) in verdicts.items():
        if (rel in ours.invalid) == a_bad:
            agree += 1
        else:
            disagree.append((rel, rel in ours.invalid, a_bad, why))
    agree_extra = 0
    for rel, (a_bad, why) in extra_verdicts.items():
        if (rel in ours.invalid) == a_bad:
            agree_extra += 1
        else:
            disagree.append((rel, rel in ours.invalid, a_bad, why + " (untimed)"))
    timed_invalid = sum(1 for v in verdicts.values() if v[0])
    print(f"   timed files:   {agree}/{len(verdicts)} agree ({timed_invalid} invalid for the anchor)")
    if extra_verdicts:
        extra_invalid = sum(1 for v in extra_verdicts.values() if v[0])
        print(f"   untimed extra: {agree_extra}/{len(extra_verdicts)} agree ({extra_invalid} invalid for the anchor)")
    checked = {**verdicts, **extra_verdicts}
    covered = Counter(leaves[r].breakage for r in checked if leaves[r].breakage)
    print(f"   planted kinds checked by both: {len(covered)} of {len({lf.breakage for lf in broken + warn_only})}")
    for rel, o_bad, a_bad, why in disagree:
        print(f"   DISAGREE {rel}: ours {'invalid' if o_bad else 'valid'}, anchor {'invalid' if a_bad else 'valid'} "
              f"({why}); planted: {leaves[rel].breakage or 'nothing'}")
    if disagree:
        status = status or 1

    # 5. summary -----------------------------------------------------------------------------------------
    cli, api = best.get("cli"), best.get("api")
    lines = [
        "==== sdg validate_scale summary ====",
        f"command:            {command}",
        f"machine:            {platform.machine()}, {os.cpu_count()} cpus, python {platform.python_version()}; "
        f"load average {load_start[0]:.2f} at start, {os.getloadavg()[0]:.2f} at end (other jobs skew timings)",
        f"leaves:             {n} listed by ours ({', '.join(f'{k} {v}' for k, v in sorted(kinds.items()))}); "
        f"{m} by the anchor (no foundational_skills/)",
        f"broken (planted):   {len(broken)} ({100 * len(broken) / n:.1f}%), "
        f"{len({b.breakage for b in broken})} kinds; +{len(warn_only)} valid with warnings",
    ]
    def cpu_txt(r: OursRun) -> str:
        return f"cpu {r.cpu:.1f} s = {rate(len(r.changed), r.cpu):.1f} files/cpu-s"

    if cli:
        lines.append(f"ours CLI:           {cli.seconds:.2f} s for {len(cli.changed)} files = "
                     f"{rate(len(cli.changed), cli.seconds):.1f} files/s; {cpu_txt(cli)}  (sdg taxonomy diff "
                     f"--format json, process start included{', best of %d' % args.repeat if args.repeat > 1 else ''})")
    if api:
        lines.append(f"ours in-process:    {api.seconds:.2f} s for {len(api.changed)} files = "
                     f"{rate(len(api.changed), api.seconds):.1f} files/s; {cpu_txt(api)}  ({api.label})")
    lines.append(f"anchor:             {t_anchor:.1f} s for {m} files = {anchor_rate:.2f} files/s; cpu {c_anchor:.1f} s = "
                 f"{anchor_cpu_rate:.2f} files/cpu-s  "
                 f"(diff {t_adiff:.2f} s + parse {'%d-file sample, extrapolated' % k if extrap else 'all files'})")
    if cli:
        lines.append(f"ratio CLI/anchor:   {rate(len(cli.changed), cli.seconds) / anchor_rate:.1f}x wall, "
                     f"{rate(len(cli.changed), cli.cpu) / anchor_cpu_rate:.1f}x cpu  (target >= 10x)")
    if api:
        lines.append(f"ratio in-proc/anch: {rate(len(api.changed), api.seconds) / anchor_rate:.1f}x wall, "
                     f"{rate(len(api.changed), api.cpu) / anchor_cpu_rate:.1f}x cpu")
    lines.append(f"verdicts:           {agree}/{len(verdicts)} timed files agree"
                 + (f", {agree_extra}/{len(extra_verdicts)} untimed extra agree" if extra_verdicts else "")
                 + f"; {len(disagree)} disagreements")
    lines.append("anchor favoured by: yq disabled (no subprocess per schema error), no document git clones "
                 "(ilab clones every knowledge repo), no ilab CLI start-up, diff emulated (not ilab's code)")
    lines.append(f"exit status:        {status}")
    print("\n" + "\n".join(lines))
    return status


if __name__ == "__main__":
    sys.exit(main())
