"""A corpus of broken and hostile `qna.yaml` files run through `validate_files`.

Every case names the finding it must produce (severity, line, message pattern, yaml path). Each case
also checks that every finding is well formed and that error messages say how to fix the file, and
the verdict (errors or not) is compared with InstructLab's own `TaxonomyParser`. Cases where we are
deliberately stricter than InstructLab are listed in `STRICTER_THAN_INSTRUCTLAB` with the reason.

Known bugs are marked `xfail(strict=True, reason="bug: ...")` on exactly the test they break.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pytest

from sdg.taxonomy.documents import DocumentPolicy
from sdg.taxonomy.findings import Finding
from sdg.taxonomy.validate import ValidationOptions, ValidationResult, validate_files

CORPUS_DIR = Path(__file__).parent / "corpus"
VENV_BIN = Path(sys.executable).parent

GIT_ENV = {
    "GIT_AUTHOR_NAME": "Test", "GIT_AUTHOR_EMAIL": "test@example.com",
    "GIT_COMMITTER_NAME": "Test", "GIT_COMMITTER_EMAIL": "test@example.com",
    "GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1",
}

# Words that tell a person what to do about an error.
FIX_WORDS = re.compile(
    r"\b(add|remove|set|write|rename|did you mean|use|save|quote|convert|shorten|move|put|pin|raise|"
    r"drop|narrow|replace|delete|indent|close|allowed are|start the file)\b", re.IGNORECASE)

# --------------------------------------------------------------------------- valid templates

# A valid v3 freeform skill (5 seeds, lines 5-14).
SKILL = """\
version: 3
created_by: tester
task_description: Write a haiku about the given subject.
seed_examples:
  - question: Write a haiku about fog.
    answer: Grey breath on the sea.
  - question: Write a haiku about snow.
    answer: Quiet on the street.
  - question: Write a haiku about a cat.
    answer: Paws tucked on the sill.
  - question: Write a haiku about a train.
    answer: Red lamps fade away.
  - question: Write a haiku about bread.
    answer: Under a damp cloth.
"""


def _knowledge_seed(i: int, qna: int = 3) -> str:
    lines = [f"  - context: Context number {i} about solar eclipses and the Moon.",
             "    questions_and_answers:"]
    for j in range(1, qna + 1):
        lines += [f"      - question: Question {i}.{j} about eclipses?", f"        answer: Answer {i}.{j}."]
    return "\n".join(lines) + "\n"


# A valid v3 knowledge leaf: seeds at lines 6, 14, 22, 30, 38 (8 lines each); `document:` at line 46.
KNOWLEDGE = (
    "version: 3\n"
    "created_by: tester\n"
    "domain: astronomy\n"
    "document_outline: How solar eclipses happen and how to watch them.\n"
    "seed_examples:\n"
    + "".join(_knowledge_seed(i) for i in range(1, 6))
    + "document:\n"
    "  repo: https://github.com/example/docs\n"
    "  commit: 0123456789abcdef0123456789abcdef01234567\n"
    "  patterns:\n"
    "    - \"*.md\"\n"
)
assert KNOWLEDGE.splitlines()[45] == "document:"


def replace1(text: str, old: str, new: str) -> str:
    assert old in text, old
    return text.replace(old, new, 1)


def knowledge_with(**doc: str) -> str:
    text = KNOWLEDGE
    for key, value in doc.items():
        text = re.sub(rf"^  {key}: .*$", f"  {key}: {value}", text, count=1, flags=re.M)
    return text


def knowledge_pattern(pattern: str) -> str:
    return replace1(KNOWLEDGE, '    - "*.md"\n', f"    - {pattern}\n")


# --------------------------------------------------------------------------- hostile payloads

UTF16_BOM = b"\xff\xfe" + SKILL.encode("utf-16-le")
DEEP_NESTING = ("version: 3\ncreated_by: tester\ntask_description: t\nseed_examples: "
                + "[" * 10_000 + "]" * 10_000 + "\n")

# --------------------------------------------------------------------------- cases

@dataclass(frozen=True)
class Case:
    id: str
    rel: str  # taxonomy-relative path of the file
    content: Any  # str | bytes | Callable[[Path], str | bytes] (the taxonomy root is passed)
    severity: str | None  # the expected finding's severity; None = the file is valid (no errors)
    message: str = ""  # regex the expected finding's message must match (re.search)
    line: int = 0
    yaml_path: str | None = None
    options: dict = field(default_factory=dict)
    absent: str | None = None  # regex no finding's message may match
    ilab: bool = True  # InstructLab's parser can read this case quickly (no bomb expansion)
    extra_files: tuple[tuple[str, Any], ...] = ()  # more files validated together with the case
    check: Callable[[ValidationResult, list[Path]], None] | None = None
    bugs: dict = field(default_factory=dict)  # test name ("finding" | "hint" | "parity") -> bug reason


def _check_duplicates(result: ValidationResult, files: list[Path]) -> None:
    dups = [f for f in result.findings if f.severity == "warning" and "duplicate leaf" in f.message]
    assert len(dups) == 2, [f.format() for f in result.findings]
    assert {Path(f.path).resolve() for f in dups} == {p.resolve() for p in files}
    for f in dups:
        me = next(p for p in files if Path(f.path).resolve() == p.resolve())
        other = next(p for p in files if p != me)
        assert f"/{other.parent.name}/qna.yaml" in f.message, f.message
        assert f"/{me.parent.name}/qna.yaml" not in f.message, f.message


def _no_findings(result: ValidationResult, files: list[Path]) -> None:
    assert not result.findings, [f.format() for f in result.findings]


def _symlinked_docs(root: Path) -> str:
    """A knowledge leaf whose local document repo holds a symlink to a file outside the checkout."""
    outside = root.parent / "outside"
    outside.mkdir(exist_ok=True)
    (outside / "secret.md").write_text("# secret\n", encoding="utf-8")
    repo = root.parent / "docrepo"
    repo.mkdir(exist_ok=True)

    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=repo, env={**os.environ, **GIT_ENV},
                              capture_output=True, text=True, check=True)
        return done.stdout.strip()

    git("init", "-q", "-b", "main")
    (repo / "eclipses.md").write_text("# Eclipses\n\nThe Moon covers the Sun.\n", encoding="utf-8")
    os.symlink(outside / "secret.md", repo / "leak.md")
    git("add", "-A")
    git("commit", "-q", "-m", "docs")
    sha = git("rev-parse", "HEAD")
    return knowledge_with(repo=str(repo), commit=sha)


SK = "compositional_skills/writing/haiku/qna.yaml"
KN = "knowledge/science/eclipses/qna.yaml"

CASES: list[Case] = [
    # ---- YAML syntax
    Case("yaml_bad_indentation", SK, replace1(SKILL, "    answer: Grey", "     answer: Grey"),
         "error", r"YAML syntax error: mapping values are not allowed", 6),
    Case("yaml_unclosed_quote", SK, lambda root: (CORPUS_DIR / "unclosed_quote.yaml").read_bytes(),
         "error", r"YAML syntax error: .*quoted scalar.*end of stream", 2),
    Case("yaml_tab_indentation", SK, lambda root: (CORPUS_DIR / "tab_indentation.yaml").read_bytes(),
         "error", r"YAML syntax error: .*cannot start any token", 5),
    Case("yaml_duplicate_key_v3", SK, replace1(SKILL, "task_description:", "created_by: someone-else\ntask_description:"),
         "error", r'duplication of key "created_by" in mapping \(key-duplicates\)', 3),
    Case("yaml_unhashable_key", SK, replace1(SKILL, "created_by: tester\n", "created_by: tester\n? [a, b]\n: x\n"),
         "error", r"unhashable key", 3),
    # ---- libyaml (ours) and pure-Python PyYAML (InstructLab, yamllint) disagree on some YAML
    Case("v3_question_mark_in_flow", SK,
         replace1(SKILL, "  - question: Write a haiku about fog.\n    answer: Grey breath on the sea.\n",
                  "  - {question: What is fog?, answer: Grey breath on the sea.}\n"),
         "error", r"syntax error: expected ',' or '}', but got '\?' \(syntax\)", 5),
    Case("v1_question_mark_in_flow", SK,
         "created_by: tester\ntask_description: Arithmetic.\nseed_examples:\n"
         "  - {question: What is 2+2?, answer: Four.}\n",
         "error", r"(?i)flow mapping|'\?'", 4),
    Case("v1_tab_after_colon", SK,
         "created_by: tester\ntask_description: Arithmetic.\nseed_examples:\n"
         "  - question: What is two plus two?\n    answer:\tFour.\n",
         "error", r"(?i)tab|cannot start any token", 5),
    # ---- wrong types
    Case("type_int_question", SK, replace1(SKILL, "question: Write a haiku about snow.", "question: 42"),
         "error", r"42 is not of type 'string'", 7, ".seed_examples[1].question"),
    Case("type_date_created_by", SK, replace1(SKILL, "created_by: tester", "created_by: 2024-01-01"),
         "error", r"datetime\.date\(2024, 1, 1\) is not of type 'string'.*quote", 2, ".created_by"),
    Case("type_list_task_description", SK, replace1(SKILL, "task_description: Write", "task_description:\n  - Write"),
         "error", r"is not of type 'string'", 3, ".task_description"),
    Case("type_mapping_as_seed_examples", SK,
         "version: 3\ncreated_by: tester\ntask_description: t\nseed_examples:\n  question: q\n  answer: a\n",
         "error", r"is not of type 'array'; write a list", 4, ".seed_examples",
         absent=r"quote text"),
    Case("type_bool_answer", SK, replace1(SKILL, "answer: Red lamps fade away.", "answer: yes"),
         "error", r"True is not of type 'string'.*quote", 12, ".seed_examples[3].answer"),
    # ---- missing required fields
    Case("missing_created_by", SK, replace1(SKILL, "created_by: tester\n", ""),
         "error", r"'created_by' is a required property; add", 1, "."),
    Case("missing_task_description", SK, replace1(SKILL, "task_description: Write a haiku about the given subject.\n", ""),
         "error", r"'task_description' is a required property; add", 1, "."),
    Case("missing_seed_examples", SK, SKILL.split("seed_examples:")[0],
         "error", r"'seed_examples' is a required property; add", 1, "."),
    Case("missing_answer", SK, replace1(SKILL, "    answer: Paws tucked on the sill.\n", ""),
         "error", r"'answer' is a required property; add", 9, ".seed_examples[2]"),
    Case("missing_questions_and_answers", KN,
         replace1(KNOWLEDGE, _knowledge_seed(2), "  - context: Context number 2 about solar eclipses and the Moon.\n"),
         "error", r"'questions_and_answers' is a required property; add", 14, ".seed_examples[1]"),
    Case("missing_document_commit", KN, replace1(KNOWLEDGE, "  commit: 0123456789abcdef0123456789abcdef01234567\n", ""),
         "error", r"'commit' is a required property; add", 46, ".document"),
    Case("missing_document", KN, KNOWLEDGE.split("document:\n")[0],
         "error", r"'document' is a required property; add", 1, "."),
    # ---- too few
    Case("skill_4_seeds_v3", SK, SKILL.rsplit("  - question: Write a haiku about bread.", 1)[0],
         "error", r"Value must have at least 5 items; it has 4; add 1 more", 4, ".seed_examples"),
    Case("knowledge_2_qna", KN, replace1(KNOWLEDGE, _knowledge_seed(1), _knowledge_seed(1, qna=2)),
         "error", r"Value must have at least 3 items; it has 2; add 1 more", 7,
         ".seed_examples[0].questions_and_answers"),
    Case("skill_repeated_seed", SK, replace1(SKILL, "  - question: Write a haiku about bread.\n    answer: Under a damp cloth.\n",
                                            "  - question: Write a haiku about fog.\n    answer: Grey breath on the sea.\n"),
         "error", r"non-unique elements; remove or change", 4, ".seed_examples"),
    # ---- unknown keys / typos
    Case("typo_anwser", SK, replace1(SKILL, "    answer: Quiet", "    anwser: Quiet"),
         "error", r"'anwser' -> did you mean 'answer'", 7, ".seed_examples[1]"),
    Case("typo_contxt", KN, replace1(KNOWLEDGE, "  - context: Context number 3", "  - contxt: Context number 3"),
         "error", r"'contxt' -> did you mean 'context'", 22, ".seed_examples[2]"),
    Case("typo_top_level_key", SK, replace1(SKILL, "task_description:", "task_descripton:"),
         "error", r"'task_descripton' -> did you mean 'task_description'", 1, ".",
         absent=r"remove 'version'"),
    # ---- versions
    Case("version_4", SK, replace1(SKILL, "version: 3", "version: 4"),
         "error", r"version 4 is not a known schema version.*use version: 3", 1, ".version"),
    Case("version_three", SK, replace1(SKILL, "version: 3", 'version: "three"'),
         "error", r"'three' is not of type 'integer'", 1, ".version"),
    Case("knowledge_version_1", KN, replace1(KNOWLEDGE, "version: 3", "version: 1"),
         "error", r"Version 1 is not supported for knowledge.*convert it to version 3", 1),
    Case("knowledge_version_2", KN, replace1(KNOWLEDGE, "version: 3", "version: 2"),
         "error", r"Version 2 is not supported for knowledge.*convert it to version 3", 1),
    # ---- not a leaf at all
    Case("empty_file", SK, b"", "error", r"empty.*add seed examples", 1),
    Case("only_comments", SK, b"# just a comment\n# and another\n", "error", r"empty.*add seed examples", 1),
    Case("top_level_list", SK, "- version: 3\n- created_by: tester\n",
         "error", r"top-level element is not an object", 1),
    Case("top_level_scalar", SK, "just some words\n", "error", r"top-level element is not an object", 1),
    Case("yaml_bomb_billion_laughs", SK, lambda root: (CORPUS_DIR / "billion_laughs.yaml").read_bytes(),
         "error", r"expands to more than 200,000 nodes.*write the content out plainly", 8, ilab=False),
    Case("recursive_alias", SK, replace1(SKILL, "created_by: tester", "created_by: &a [*a]"),
         "error", r"recursive YAML alias.*remove the alias", 2),
    Case("deep_nesting_10000", SK, DEEP_NESTING, "error", r"nest", 4),
    Case("deep_nesting_100_block", SK, "version: 3\ncreated_by: tester\nseed_examples:\n" + "- " * 100 + "x\n",
         "error", r"nested deeper than 64 levels", 4),
    Case("huge_file", SK, SKILL, "error", r"file is \d[\d,]* bytes; the limit is 200.*put long documents", 1,
         options={"max_file_bytes": 200}),
    Case("binary_garbage", SK, lambda root: (CORPUS_DIR / "binary_garbage.bin").read_bytes(),
         "error", r"not UTF-8 text \(byte 0xff at offset 1\); save the file as UTF-8", 1),
    Case("utf16_with_bom", SK, UTF16_BOM, "error", r"not UTF-8 text \(byte 0xff at offset 0\)", 1),
    Case("nonstring_key_int", SK, replace1(SKILL, "created_by: tester\n", "created_by: tester\n1: x\n"),
         "error", r"mapping key '1' is not text; write keys", 3),
    Case("nonstring_key_in_qna_item", KN,
         replace1(KNOWLEDGE, "        answer: Answer 4.2.\n", "        answer: Answer 4.2.\n        2024-01-01: a date\n"),
         "error", r"mapping key '2024-01-01' is not text; write keys", 36),
    Case("invalid_date_value", SK, replace1(SKILL, "created_by: tester", "created_by: 2024-02-30"),
         "error", r"(?i)date|day", 2),
    Case("huge_integer_value", SK, replace1(SKILL, "created_by: tester", "created_by: " + "9" * 5000),
         "error", r"(?i)digits|integer|number", 2),
    Case("bad_explicit_tag_value", SK, replace1(SKILL, "created_by: tester", "created_by: !!timestamp soon"),
         "error", r"(?i)timestamp", 2),
    # ---- unsafe document sources
    Case("repo_ext_helper", KN, knowledge_with(repo='"ext::sh -c touch% /tmp/pwned"'),
         "error", r"remote helpers \(such as ext::\) can run commands.*allowed are", 47, ".document.repo"),
    Case("repo_fd_helper", KN, knowledge_with(repo='"fd::3"'),
         "error", r"'fd::3' is not allowed.*allowed are", 47, ".document.repo"),
    Case("repo_plain_http", KN, knowledge_with(repo="http://example.com/docs.git"),
         "error", r"plain http:// .*use https://", 47, ".document.repo"),
    Case("repo_leading_dash", KN, knowledge_with(repo='"--upload-pack=touch /tmp/pwned"'),
         "error", r"starts with '-' and would be read as a git option.*allowed are", 47, ".document.repo"),
    Case("pattern_dotdot", KN, knowledge_pattern('"../secret.md"'),
         "error", r"contains a '\.\.' segment", 50, ".document.patterns[0]"),
    Case("pattern_absolute", KN, knowledge_pattern("/etc/passwd"),
         "error", r"'/etc/passwd' is absolute", 50, ".document.patterns[0]"),
    Case("document_symlink_outside", KN, _symlinked_docs,
         "error", r"'leak\.md', a symlink that resolves to .*outside the document checkout; remove the link", 46,
         ".document", options={"documents": True, "document_policy": DocumentPolicy(allow=("https", "ssh", "local"))}),
    # ---- file name
    Case("named_qna_yml", "compositional_skills/writing/haiku/qna.yml", SKILL,
         "error", r'must be named "qna\.yaml"', 1),
    # ---- our warnings (valid for InstructLab)
    Case("mixed_grounded_freeform", SK,
         replace1(SKILL, "    answer: Grey breath", "    context: Notes about the harbour.\n    answer: Grey breath"),
         "warning", r"mix grounded .*\[1\].*freeform .*\[2, 3, 4, 5\].*move them", 4, ".seed_examples"),
    Case("five_qna_in_a_seed", KN, replace1(KNOWLEDGE, _knowledge_seed(1), _knowledge_seed(1, qna=5)),
         "warning", r"5 questions_and_answers, but only the first 3 are used", 7,
         ".seed_examples[0].questions_and_answers"),
    Case("seed_over_token_budget", SK,
         replace1(SKILL, "answer: Quiet on the street.", "answer: " + ("snow falls quietly on the street " * 10).strip()),
         "warning", r"seed example 2 is about \d+ tokens \(question \d+, answer \d+\).*about 30 tokens.*shorten",
         7, ".seed_examples[1]", options={"seed_token_budget": 30}),
    Case("duplicate_leaves", SK, SKILL, "warning", r"duplicate leaf: same seed examples as .*remove one", 1,
         ".seed_examples", extra_files=(("compositional_skills/writing/haiku_copy/qna.yaml", SKILL),),
         check=_check_duplicates),
    # ---- valid files that must stay valid
    Case("v1_skill_without_version", SK,
         # trailing spaces and a duplicate key: yamllint must not run on version 1 files
         "created_by: tester   \ntask_description: Reason about siblings.\ntask_description: Reason about siblings.\n"
         "seed_examples:\n  - question: David has three sisters. How many brothers does each have?\n"
         "    answer: One, David.\n",
         None, check=_no_findings),
    Case("foundational_without_version", "foundational_skills/reasoning/units/qna.yaml",
         replace1(SKILL, "version: 3\n", ""), None, check=_no_findings),
    Case("merge_keys_valid", SK,
         replace1(SKILL, "  - question: Write a haiku about fog.\n    answer: Grey breath on the sea.\n",
                  "  - &fog\n    question: Write a haiku about fog.\n    answer: Grey breath on the sea.\n"
                  "  - <<: *fog\n    question: Write a haiku about mist.\n"),
         None, check=_no_findings),
    Case("utf8_bom_valid", SK, b"\xef\xbb\xbf" + SKILL.encode(), None, check=_no_findings),
]

# Cases where we report an error and InstructLab's parser does not, each with the reason.
STRICTER_THAN_INSTRUCTLAB = {
    "empty_file": "an empty leaf has nothing to generate from (InstructLab only warns)",
    "only_comments": "a comments-only leaf is empty (InstructLab only warns)",
    "huge_file": "taxonomy.max_file_bytes size limit (InstructLab has none)",
    "repo_ext_helper": "unsafe document repo transport (InstructLab's parser never checks repo URLs)",
    "repo_fd_helper": "unsafe document repo transport",
    "repo_plain_http": "plain http:// document repo",
    "repo_leading_dash": "document repo that git would read as an option",
    "pattern_dotdot": "document pattern leaving the checkout",
    "pattern_absolute": "absolute document pattern",
    "document_symlink_outside": "documents are fetched and symlinks checked (InstructLab's parser does not fetch)",
    "nonstring_key_in_qna_item": "non-text mapping keys (the schema leaves questions_and_answers items open)",
}


def _marks(case: Case, test: str) -> list:
    reason = case.bugs.get(test)
    return [pytest.mark.xfail(strict=True, reason=reason)] if reason else []


def _params(test: str, cases: list[Case] | None = None) -> list:
    return [pytest.param(c, id=c.id, marks=_marks(c, test)) for c in (CASES if cases is None else cases)]


# --------------------------------------------------------------------------- running a case


def _content(content: Any, root: Path) -> bytes:
    if callable(content):
        content = content(root)
    return content.encode("utf-8") if isinstance(content, str) else content


def build(case: Case, root: Path) -> list[Path]:
    """Write the case's file(s) into the taxonomy at `root`; returns them, the case's own file first."""
    files = []
    for rel, content in ((case.rel, case.content), *case.extra_files):
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(_content(content, root))
        files.append(path)
    return files


def run_case(case: Case, tmp_path: Path) -> tuple[ValidationResult, list[Path]]:
    root = tmp_path / "taxonomy"
    root.mkdir()
    files = build(case, root)
    options = dict(case.options)
    if options.get("documents"):
        options["documents_cache"] = tmp_path / "cache"
    return validate_files(files, root, ValidationOptions(**options)), files


def assert_well_formed(f: Finding) -> None:
    assert isinstance(f.path, str) and f.path, f
    assert Path(f.path).name in ("qna.yaml", "qna.yml"), f
    assert isinstance(f.line, int) and f.line >= 1, f
    assert isinstance(f.col, int) and f.col >= 1, f
    assert f.severity in ("error", "warning"), f
    assert isinstance(f.message, str) and f.message.strip(), f
    assert f.format().startswith(f"{f.path}:{f.line}:{f.col} "), f.format()


def expected_finding(case: Case, result: ValidationResult, files: list[Path]) -> Finding:
    own = [f for f in result.findings if Path(f.path) == files[0] or f.path.endswith(case.rel)]
    matching = [f for f in own if f.severity == case.severity and re.search(case.message, f.message, re.S)]
    shown = "\n".join(f.format() for f in result.findings)
    assert matching, f"no {case.severity} matching {case.message!r}; findings:\n{shown}"
    at_line = [f for f in matching if f.line == case.line]
    assert at_line, f"expected line {case.line}; findings:\n{shown}"
    if case.yaml_path is not None:
        assert any(f.yaml_path == case.yaml_path for f in at_line), f"expected [{case.yaml_path}]; findings:\n{shown}"
        at_line = [f for f in at_line if f.yaml_path == case.yaml_path]
    return at_line[0]


# --------------------------------------------------------------------------- tests


def test_corpus_is_large_enough() -> None:
    assert len(CASES) >= 35
    ids = [c.id for c in CASES]
    assert len(ids) == len(set(ids)), "case ids must be unique"


@pytest.mark.parametrize("case", _params("finding"))
def test_case_finding(case: Case, tmp_path: Path) -> None:
    result, files = run_case(case, tmp_path)
    for f in result.findings:
        assert_well_formed(f)
    if case.severity is None:
        assert result.errors == 0, [f.format() for f in result.findings]
    else:
        expected_finding(case, result, files)
    if case.severity == "warning":
        assert result.errors == 0, [f.format() for f in result.findings]
    if case.absent:
        bad = [f.format() for f in result.findings if re.search(case.absent, f.message)]
        assert not bad, f"no finding may match {case.absent!r}: {bad}"
    if case.check:
        case.check(result, files)


ERROR_CASES = [c for c in CASES if c.severity == "error"]


@pytest.mark.parametrize("case", _params("hint", ERROR_CASES))
def test_error_tells_the_fix(case: Case, tmp_path: Path) -> None:
    result, files = run_case(case, tmp_path)
    errors = [f for f in result.findings if f.is_error]
    assert errors
    vague = [f.format() for f in errors if not FIX_WORDS.search(f.message)]
    assert not vague, "error messages that do not say how to fix the file:\n" + "\n".join(vague)


# --------------------------------------------------------------------------- InstructLab parity


def instructlab_says_error(paths: list[Path], monkeypatch: pytest.MonkeyPatch) -> bool:
    from instructlab.schema.taxonomy import TaxonomyParser, TaxonomyReadingException

    monkeypatch.setenv("PATH", f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    verdict = False
    for path in paths:
        parser = TaxonomyParser(schema_version=0, message_format="logging", yamllint_strict=True)
        parser.yq_available = False
        try:
            verdict |= parser.parse(path).errors > 0
        except TaxonomyReadingException:
            verdict = True
    return verdict


PARITY_CASES = [c for c in CASES if c.ilab]


@pytest.mark.parametrize("case", _params("parity", PARITY_CASES))
def test_verdict_matches_instructlab(case: Case, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    result, files = run_case(case, tmp_path)
    ours = result.errors > 0
    theirs = instructlab_says_error(files, monkeypatch)
    if case.id in STRICTER_THAN_INSTRUCTLAB:
        assert ours and not theirs, (
            f"{case.id} is listed as stricter than InstructLab ({STRICTER_THAN_INSTRUCTLAB[case.id]}) but "
            f"ours={ours} InstructLab={theirs}: remove it from STRICTER_THAN_INSTRUCTLAB")
    else:
        assert ours == theirs, f"ours={ours} InstructLab={theirs}; findings: {[f.format() for f in result.findings]}"


def test_stricter_list_names_real_cases() -> None:
    parity_ids = {c.id for c in PARITY_CASES}
    assert set(STRICTER_THAN_INSTRUCTLAB) <= parity_ids, set(STRICTER_THAN_INSTRUCTLAB) - parity_ids


def test_yamllint_binary_is_where_parity_expects_it() -> None:
    assert (VENV_BIN / "yamllint").exists(), "InstructLab's parser shells out to yamllint; install it in the venv"


# --------------------------------------------------------------------------- cost of many seeds


def test_many_seeds_cost_a_linear_number_of_comparisons(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Counts jsonschema's equality comparisons instead of timing: 300 distinct seeds should not need
    the 44,850 pairwise comparisons a quadratic uniqueness check makes."""
    import jsonschema._utils as js_utils

    calls = 0
    real_equal = js_utils.equal

    def counting_equal(one: Any, two: Any) -> bool:
        nonlocal calls
        calls += 1
        return real_equal(one, two)

    monkeypatch.setattr(js_utils, "equal", counting_equal)
    n = 300
    text = ("version: 3\ncreated_by: tester\ntask_description: t\nseed_examples:\n"
            + "".join(f"  - question: Question {i}?\n    answer: Answer {i}.\n" for i in range(n)))
    path = tmp_path / "compositional_skills" / "many" / "qna.yaml"
    path.parent.mkdir(parents=True)
    path.write_text(text, encoding="utf-8")
    result = validate_files([path], tmp_path, ValidationOptions())
    assert result.errors == 0, [f.format() for f in result.findings]
    assert calls <= 20 * n, f"{calls:,} equality comparisons for {n} seeds"
