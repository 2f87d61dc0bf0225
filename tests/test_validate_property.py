"""Property tests: `validate_files` returns findings for any input and never raises.

Three input generators: arbitrary bytes, YAML-ish text from a small grammar (nested mappings and
sequences, anchors and aliases, the real taxonomy keys, values of random types) and mutations of the
valid skeleton leaves. Any exception other than `SdgError` fails; every finding must be well formed.
A last test runs the `sdg` CLI on hostile corpus files: exit 1, no Python traceback.

`test_known_crashing_scalars` covers YAML scalars that once crashed the loader (impossible dates,
explicit `!!int`/`!!timestamp` tags on wrong text, numbers over 4300 digits) with explicit examples.
"""

from __future__ import annotations

import os
import subprocess
import sys
from importlib import resources
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from sdg.errors import SdgError
from sdg.taxonomy.findings import Finding
from sdg.taxonomy.validate import ValidationOptions, ValidationResult, validate_files

CORPUS_DIR = Path(__file__).parent / "corpus"
SKELETON = resources.files("sdg.taxonomy").joinpath("skeleton")
SKELETON_LEAVES = (
    "compositional_skills/writing/freeform/haiku/qna.yaml",
    "compositional_skills/extraction/grounded/meeting_action_items/qna.yaml",
    "foundational_skills/reasoning/unit_conversion/qna.yaml",
    "knowledge/science/astronomy/solar_eclipses/qna.yaml",
)
PATHS = ("compositional_skills/x/qna.yaml", "knowledge/x/qna.yaml")
# Small limits keep every example fast; they are still far above what a leaf needs.
OPTIONS = ValidationOptions(max_file_bytes=64_000, max_yaml_nodes=5_000)

FAST = settings(max_examples=100, deadline=None, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


def assert_well_formed(f: Finding) -> None:
    assert isinstance(f.path, str) and f.path.endswith("qna.yaml"), f
    assert isinstance(f.line, int) and f.line >= 1, f
    assert isinstance(f.col, int) and f.col >= 1, f
    assert f.severity in ("error", "warning"), f
    assert isinstance(f.message, str) and f.message.strip(), f
    assert isinstance(f.yaml_path, str), f
    f.format()


def validate_bytes(root: Path, rel: str, data: bytes) -> ValidationResult | None:
    """Write `data` at `rel` under `root` and validate it; None when an SdgError was raised."""
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    try:
        result = validate_files([path], root, OPTIONS)
    except SdgError:
        return None
    for f in result.findings:
        assert_well_formed(f)
    assert result.errors + result.warnings == len(result.findings)
    return result


# --------------------------------------------------------------------------- (1) arbitrary bytes

yamlish_bytes = st.one_of(
    st.binary(max_size=1500),
    st.text(max_size=600).map(lambda s: s.encode("utf-8", "surrogatepass")),
    st.lists(st.sampled_from([b"version: 3\n", b"seed_examples:\n", b"  - ", b"question: ", b"answer: ",
                              b"context: ", b"\t", b"\x00", b"\xff", b"&a ", b"*a", b"[", b"]", b"{", b"}",
                              b": ", b"\n", b"'", b'"', b"# c\n", b"---\n", b"\xef\xbb\xbf"]),
             max_size=60).map(b"".join),
)


@FAST
@given(data=yamlish_bytes)
def test_arbitrary_bytes_never_raise(tmp_path: Path, data: bytes) -> None:
    for rel in PATHS:
        validate_bytes(tmp_path, rel, data)


# --------------------------------------------------------------------------- (2) YAML grammar

REAL_KEYS = ["version", "created_by", "task_description", "seed_examples", "question", "answer", "context",
             "questions_and_answers", "document", "repo", "commit", "patterns", "domain", "document_outline"]
ANCHORS = ["a1", "a2", "a3"]

# Scalars of many YAML types; all construct without error (the crashing ones are tested separately).
SCALARS = ["3", "1", "2", "4", "-1", "0x1F", "0o17", "1_000", "3.0", "1e3", ".inf", "-.inf", ".nan", "true", "false",
           "yes", "no", "null", "~", "2024-01-01", "2001-12-14t21:59:43.10-05:00", '"three"', "'single'",
           '"a: b"', '"*.md"', '"https://github.com/example/docs"', '"ext::sh -c id"', '"../secret.md"',
           "/etc/passwd", '"--upload-pack=x"', "http://example.com/x.git", "!!str 3", "!!binary aGVsbG8=",
           '"\\u0000"', '""', "''", "a b c", "What is the answer?"]
SHARP_SCALARS = ["-", "?", "|", ">", "@x", "`x", "%x", "!x", "&", "*", "{", "]"]
SAFE_WORD = st.text(alphabet="abcdefgh _-", min_size=1, max_size=12).map(str.strip).filter(bool)
WILD_WORD = st.text(alphabet="abcdefgh _-:#'\"&*!|>{}[],?", min_size=1, max_size=12)


CLEAN_SCALAR = st.one_of(st.sampled_from(SCALARS), SAFE_WORD)
SHARP_SCALAR = st.one_of(st.sampled_from(SCALARS), SAFE_WORD, WILD_WORD, st.sampled_from(SHARP_SCALARS))


def key() -> st.SearchStrategy:
    return st.one_of(st.sampled_from(REAL_KEYS), st.sampled_from(REAL_KEYS), st.sampled_from(
        ["1", "null", "true", "2024-01-01", "[a, b]", "anwser", "contxt", "<<"]), SAFE_WORD)


def _extend(children: st.SearchStrategy) -> st.SearchStrategy:
    return st.one_of(
        st.tuples(st.just("seq"), st.booleans(), st.lists(children, max_size=5)),
        st.tuples(st.just("map"), st.booleans(), st.lists(st.tuples(key(), children), max_size=5)),
        st.tuples(st.just("anchor"), st.sampled_from(ANCHORS), children),
    )


def nodes(scalar: st.SearchStrategy) -> st.SearchStrategy:
    # An alias is rendered only once its anchor was written (else as a plain scalar), so most
    # documents compose; an "undefined" alias is drawn on purpose now and then.
    leaf = st.one_of(st.tuples(st.just("scalar"), scalar), st.tuples(st.just("scalar"), scalar),
                     st.tuples(st.just("alias"), st.sampled_from(ANCHORS + ["undefined"])))
    return st.recursive(leaf, _extend, max_leaves=25)


class _Renderer:
    """Block or flow YAML text for a node tree (a tuple grammar: scalar, alias, anchor, seq, map)."""

    def __init__(self) -> None:
        self.defined: set[str] = set()

    def alias(self, name: str) -> str:
        return f"*{name}" if name in self.defined or name == "undefined" and not self.defined else "x"

    def anchor(self, n: tuple) -> tuple[str, tuple]:
        """`&name ` for the outermost new anchor of a chain (a node has one anchor), and the node below."""
        text = ""
        while n[0] == "anchor":
            if not text and n[1] not in self.defined:
                self.defined.add(n[1])
                text = f"&{n[1]} "
            n = n[2]
        return text, n

    def is_block(self, n: tuple) -> bool:
        while n[0] == "anchor":
            n = n[2]
        return n[0] in ("seq", "map") and not n[1] and bool(n[2])

    def flow(self, n: tuple) -> str:
        kind = n[0]
        if kind == "scalar":
            return n[1]
        if kind == "alias":
            return self.alias(n[1])
        if kind == "anchor":
            name, n = self.anchor(n)
            return f"{name}{self.flow(n)}"
        if kind == "seq":
            return "[" + ", ".join(self.flow(c) for c in n[2]) + "]"
        return "{" + ", ".join(f"{k}: {self.flow(v)}" for k, v in n[2]) + "}"

    def block(self, n: tuple, indent: int) -> list[str]:
        """Lines of a block collection at `indent` spaces (anchors on a line of their own)."""
        pad = " " * indent
        name, n = self.anchor(n)
        lines = [f"{pad}{name}".rstrip()] if name else []
        if n[0] == "seq":
            for child in n[2]:
                lines += [f"{pad}-", *self.block(child, indent + 2)] if self.is_block(child) else [
                    f"{pad}- {self.flow(child)}"]
        else:
            for k, child in n[2]:
                lines += [f"{pad}{k}:", *self.block(child, indent + 2)] if self.is_block(child) else [
                    f"{pad}{k}: {self.flow(child)}"]
        return lines


def render(top: list[tuple[str, tuple]], version: str | None) -> str:
    r = _Renderer()
    lines = [f"version: {version}"] if version is not None else []
    for k, child in top:
        lines += [f"{k}:", *r.block(child, 2)] if r.is_block(child) else [f"{k}: {r.flow(child)}"]
    return "\n".join(lines) + "\n"


VERSIONS = st.one_of(st.none(), st.just("3"), st.just("3"),
                    st.sampled_from(["1", "2", "4", '"three"', "[3]", "3.0", "true"]))
# Mostly documents that parse (one bad token spoils a whole document), some with sharp tokens.
yaml_documents = st.one_of(
    st.builds(render, st.lists(st.tuples(st.sampled_from(REAL_KEYS), nodes(CLEAN_SCALAR)), max_size=6), VERSIONS),
    st.builds(render, st.lists(st.tuples(st.sampled_from(REAL_KEYS), nodes(CLEAN_SCALAR)), max_size=6), VERSIONS),
    st.builds(render, st.lists(st.tuples(st.sampled_from(REAL_KEYS), nodes(SHARP_SCALAR)), max_size=6), VERSIONS),
)


@FAST
@given(text=yaml_documents, rel=st.sampled_from(PATHS))
def test_yaml_grammar_never_raises(tmp_path: Path, text: str, rel: str) -> None:
    validate_bytes(tmp_path, rel, text.encode("utf-8"))


def test_grammar_renders_valid_yaml_for_plain_trees(tmp_path: Path) -> None:
    """The renderer itself is sound: a plain tree renders to YAML that loads to the same shape."""
    import yaml

    tree = [("seed_examples", ("seq", False, [("map", False, [("question", ("scalar", "q")),
                                                              ("answer", ("anchor", "a1", ("scalar", "x")))]),
                                              ("map", True, [("question", ("scalar", "r")),
                                                             ("answer", ("alias", "a1"))])]))]
    text = render(tree, "3")
    assert yaml.safe_load(text) == {"version": 3, "seed_examples": [{"question": "q", "answer": "x"},
                                                                      {"question": "r", "answer": "x"}]}


# Scalars whose construction fails with errors that are not yaml.YAMLError (once a crash, now findings).
CRASHING_SCALARS = ["2024-02-30", "2024-13-01", "!!int abc", "!!float abc", "!!timestamp soon", "!!bool maybe",
                    "9" * 5000]


@settings(max_examples=10, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@example(value="2024-02-30", field="created_by")
@given(value=st.sampled_from(CRASHING_SCALARS), field=st.sampled_from(["created_by", "version", "domain"]))
def test_known_crashing_scalars(tmp_path: Path, value: str, field: str) -> None:
    validate_bytes(tmp_path, PATHS[0], f"version: 3\n{field}: {value}\n".encode())


# --------------------------------------------------------------------------- (3) skeleton mutations

SKELETON_TEXTS = {rel: SKELETON.joinpath(rel).read_text(encoding="utf-8") for rel in SKELETON_LEAVES}
SWAP_VALUES = ["42", "3.5", "true", "null", "~", "[]", "{}", "[a, b]", "{a: b}", "2024-01-01", '""', "&x v", "*x",
               "*undefined", "- nested", "'unterminated", "|", "\"\\t\""]


@st.composite
def mutated_skeletons(draw) -> tuple[str, str]:
    rel = draw(st.sampled_from(SKELETON_LEAVES))
    lines = SKELETON_TEXTS[rel].splitlines()
    for _ in range(draw(st.integers(1, 4))):
        if not lines:
            break
        i = draw(st.integers(0, len(lines) - 1))
        op = draw(st.sampled_from(["delete", "duplicate", "indent", "dedent", "tab", "swap", "swap"]))
        line = lines[i]
        if op == "delete":
            del lines[i]
        elif op == "duplicate":
            lines.insert(i, line)
        elif op == "indent":
            lines[i] = " " * draw(st.integers(1, 4)) + line
        elif op == "dedent":
            lines[i] = line[draw(st.integers(1, 4)):] if line.startswith(" ") else line
        elif op == "tab":
            lines[i] = "\t" + line.lstrip(" ")
        elif ":" in line:
            head = line.split(":", 1)[0]
            lines[i] = f"{head}: {draw(st.sampled_from(SWAP_VALUES))}"
    return rel, "\n".join(lines) + "\n"


@FAST
@given(case=mutated_skeletons())
def test_skeleton_mutations_never_raise(tmp_path: Path, case: tuple[str, str]) -> None:
    rel, text = case
    validate_bytes(tmp_path, rel, text.encode("utf-8"))


def test_unmutated_skeletons_are_valid(tmp_path: Path) -> None:
    for i, (rel, text) in enumerate(SKELETON_TEXTS.items()):
        text = text.replace("{{DOCUMENTS_REPO}}", "https://github.com/example/docs")  # as init fills it in
        result = validate_bytes(tmp_path / str(i), rel, text.encode("utf-8"))
        assert result is not None and result.errors == 0, [f.format() for f in result.findings]


# --------------------------------------------------------------------------- CLI on hostile files

CLI_FILES = {
    "billion_laughs": ("compositional_skills/x/qna.yaml", lambda: (CORPUS_DIR / "billion_laughs.yaml").read_bytes()),
    "binary_garbage": ("compositional_skills/x/qna.yaml", lambda: (CORPUS_DIR / "binary_garbage.bin").read_bytes()),
    "tab_indentation": ("compositional_skills/x/qna.yaml", lambda: (CORPUS_DIR / "tab_indentation.yaml").read_bytes()),
    "utf16_bom": ("compositional_skills/x/qna.yaml",
                  lambda: b"\xff\xfe" + (CORPUS_DIR / "tab_indentation.yaml").read_text().encode("utf-16-le")),
    "deep_nesting": ("knowledge/x/qna.yaml", lambda: b"version: 3\nseed_examples: " + b"[" * 10_000 + b"]" * 10_000),
    "ext_repo": ("knowledge/x/qna.yaml", lambda: SKELETON_TEXTS[SKELETON_LEAVES[3]].replace(
        '"{{DOCUMENTS_REPO}}"', '"ext::sh -c touch% /tmp/pwned"').encode()),
    "impossible_date": ("compositional_skills/x/qna.yaml", lambda: b"version: 3\ncreated_by: 2024-02-30\n"),
}
CLI_BUGS: dict[str, str] = {}


@pytest.mark.parametrize("name", [pytest.param(n, marks=[pytest.mark.xfail(strict=True, reason=CLI_BUGS[n])]
                                               if n in CLI_BUGS else []) for n in CLI_FILES])
def test_cli_reports_hostile_files_without_traceback(tmp_path: Path, name: str) -> None:
    rel, content = CLI_FILES[name]
    path = tmp_path / "tax" / rel
    path.parent.mkdir(parents=True)
    path.write_bytes(content())
    env = {**os.environ, "HOME": str(tmp_path / "home"), "XDG_DATA_HOME": str(tmp_path / "xdg-data"),
           "XDG_CACHE_HOME": str(tmp_path / "xdg-cache"), "XDG_CONFIG_HOME": str(tmp_path / "xdg-config")}
    exe = Path(sys.executable).parent / "sdg"
    done = subprocess.run([str(exe), "taxonomy", "validate", str(path)], env=env, cwd=tmp_path,
                          capture_output=True, text=True, errors="replace", timeout=120)
    output = done.stdout + done.stderr
    assert "Traceback" not in output, output
    assert done.returncode == 1, output
    assert "error" in output, output
