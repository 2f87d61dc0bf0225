"""Validate `qna.yaml` files: InstructLab's verdicts (yamllint + JSON schema) plus our own checks.

All findings of all files are collected, never just the first. yamllint runs in-process. Nothing here
touches the network unless `documents=True`, which fetches each knowledge leaf's documents.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import yaml
from yamllint import linter
from yamllint.config import YamlLintConfig, YamlLintConfigError

from sdg.errors import ConfigError, SdgError
from sdg.taxonomy import schema_check
from sdg.taxonomy.checks import CheckContext, leaf_fingerprint, run_file_checks
from sdg.taxonomy.documents import DocumentPolicy
from sdg.taxonomy.findings import Finding, count
from sdg.taxonomy.layout import QNA_NAME, ROOTS, taxonomy_parts
from sdg.taxonomy.yamlload import GENERIC_FIX, YamlProblem, check_pure_syntax, load_yaml, locate

DEFAULT_YAMLLINT_CONFIG = "{extends: relaxed, rules: {line-length: disable}}"


@dataclass(frozen=True)
class ValidationOptions:
    """Knobs of one validation run (from the `taxonomy` config section)."""

    yamllint_config: str = DEFAULT_YAMLLINT_CONFIG
    max_file_bytes: int = 1_048_576
    max_yaml_nodes: int = 200_000
    seed_token_budget: int = 3072
    documents: bool = False
    documents_cache: Path | None = None
    chunk_tokens: int = 500
    chunk_overlap_tokens: int = 50
    # Which document sources are allowed (checked on the document.repo line, and before any fetch) and the
    # caps on reading them; the default is the config's default (https and ssh, default caps).
    document_policy: DocumentPolicy = field(default_factory=DocumentPolicy)


@dataclass(frozen=True)
class FileResult:
    """One file's verdict and, when it parsed, its contents and YAML node tree."""

    path: Path
    display: str
    parts: tuple[str, ...]  # path relative to the taxonomy root
    findings: tuple[Finding, ...]
    contents: Mapping[str, Any] | None = None
    version: int = 0
    node: yaml.Node | None = field(default=None, repr=False, compare=False)
    fingerprint: str | None = None  # of the generation input, for the duplicate-leaf check
    # options.document_policy for this file's taxonomy (sdg's example beside it trusted); leaves carry it
    document_policy: DocumentPolicy | None = field(default=None, repr=False, compare=False)

    @property
    def ok(self) -> bool:
        return not any(f.is_error for f in self.findings)


@dataclass(frozen=True)
class ValidationResult:
    files: tuple[FileResult, ...]
    findings: tuple[Finding, ...]

    @property
    def errors(self) -> int:
        return count(self.findings)[0]

    @property
    def warnings(self) -> int:
        return count(self.findings)[1]

    @property
    def ok(self) -> bool:
        return self.errors == 0


def yamllint_config_from(path: str | None) -> str:
    """The yamllint rules: InstructLab's default, or the contents of `--yaml-rules FILE`."""
    if not path:
        return DEFAULT_YAMLLINT_CONFIG
    p = Path(path).expanduser()
    if not p.is_file():
        raise ConfigError(f"yaml rules file '{path}' does not exist; pass an existing yamllint config file")
    return p.read_text(encoding="utf-8")


@functools.lru_cache(maxsize=8)
def _yamllint_conf(text: str) -> YamlLintConfig:
    try:
        return YamlLintConfig(content=text)
    except YamlLintConfigError as exc:
        raise ConfigError(f"invalid yamllint rules: {exc}") from None


def display_path(path: Path) -> str:
    """Relative to the working directory when below it, else absolute: what a person can open."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


class _FileValidator:
    def __init__(self, path: Path, parts: tuple[str, ...], options: ValidationOptions) -> None:
        self.path, self.parts, self.options = path, parts, options
        self.display = display_path(path)
        self.findings: list[Finding] = []
        self.root = _root_of(path, parts)
        self.policy = _policy_for(options.document_policy, self.root)

    def add(self, severity: str, message: str, line: int = 1, col: int = 1, yaml_path: str = "", check: str = "") -> None:
        self.findings.append(Finding(self.display, int(line), int(col), severity, message, yaml_path, check))  # type: ignore[arg-type]

    def result(self, **kw: Any) -> FileResult:
        return FileResult(self.path, self.display, self.parts, tuple(self.findings), document_policy=self.policy, **kw)

    def _outside(self) -> str | None:
        """Where the file really is when a symlink (it, or a folder above it) leads out of the taxonomy."""
        try:
            real, root = self.path.resolve(strict=True), self.root.resolve()
        except (OSError, RuntimeError):  # missing, or a symlink loop: read() reports it
            return None
        return None if real == root or root in real.parents else str(real)

    def read(self) -> str | None:
        outside = self._outside()
        if outside is not None:
            self.add("error", f"this leaf file is a symlink (or lies in a symlinked folder) that leads out of the "
                     f"taxonomy {self.root}, to {outside}; a taxonomy's leaves must be files inside it (a link "
                     "could make sdg read any file on this machine): replace the link with the file itself",
                     check="read")
            return None
        try:
            st = self.path.stat()
        except OSError as exc:
            self.add("error", f'The file "{self.path}" does not exist or is not a file ({exc.strerror})', check="read")
            return None
        if not self.path.is_file():
            self.add("error", f'The file "{self.path}" does not exist or is not a file', check="read")
            return None
        if self.path.name != QNA_NAME:
            self.add("error", f'Taxonomy file must be named "{QNA_NAME}"; "{self.path.name}" is not a valid name; '
                     f"rename it to {QNA_NAME}", check="read")
            return None
        if st.st_size > self.options.max_file_bytes:
            self.add("error", f"file is {st.st_size:,} bytes; the limit is {self.options.max_file_bytes:,} "
                     "(taxonomy.max_file_bytes): a qna.yaml holds seed examples, put long documents in the "
                     "knowledge document repo", check="read")
            return None
        try:
            raw = self.path.read_bytes()
        except OSError as exc:
            self.add("error", f"cannot read the file: {exc.strerror}", check="read")
            return None
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            line = raw.count(b"\n", 0, exc.start) + 1
            col = exc.start - (raw.rfind(b"\n", 0, exc.start) + 1) + 1
            self.add("error", f"not UTF-8 text (byte 0x{raw[exc.start]:02x} at offset {exc.start}); "
                     "save the file as UTF-8 YAML", line, col, check="read")
            return None

    def run(self) -> FileResult:
        text = self.read()
        if text is None:
            return self.result()
        try:
            loaded = load_yaml(text, self.options.max_yaml_nodes)
        except YamlProblem as exc:
            self.add("error", exc.message, exc.line, exc.col, check="yaml")
            return self.result()
        contents, node = loaded.data, loaded.node
        if not contents:
            self.add("error", "The file is empty: there is nothing to generate from; add seed examples "
                     "(InstructLab only warns here)", check="yaml")
            return self.result()
        if not isinstance(contents, Mapping):
            line, col = locate(node, [])
            self.add("error", "The file is not valid. The top-level element is not an object with key-value pairs; "
                     "start the file with `version: 3` and the keys of a skill or knowledge leaf", line, col, check="yaml")
            return self.result()
        bad_key = _first_non_string_key(node)
        version = _version_of(contents)
        if version > 1:
            for p in linter.run(text, _yamllint_conf(self.options.yamllint_config)):
                self.add("error", _yamllint_message(p), p.line, p.column, check="yamllint")
        else:
            try:
                check_pure_syntax(text)
            except YamlProblem as exc:
                self.add("error", exc.message, exc.line, exc.col, check="yaml")
                return self.result()
        raw_version = contents.get("version", 1)
        if not isinstance(raw_version, int) and not _is_int_text(raw_version):
            line, col = locate(node, ["version"])
            self.add("error", f"version {raw_version!r} is not a number; write version: 3", line, col, ".version",
                     check="schema")
        if bad_key is not None:
            self.add("error", f"mapping key {bad_key[0]!r} is not text; write keys as plain words", bad_key[1], bad_key[2], check="yaml")
        name = schema_check.schema_name_for(self.parts, contents)
        if version not in schema_check.available_versions():
            line, col = locate(node, ["version"])
            known = ", ".join(map(str, schema_check.available_versions()))
            self.add("error", f"version {contents.get('version')!r} is not a known schema version ({known}); use version: 3",
                     line, col, ".version", check="schema")
            return self.result(contents=contents, version=version, node=node)
        schema_ok = True
        for abs_path, yaml_path, message in schema_check.schema_errors(version, name, contents):
            schema_ok = False
            line, col = locate(node, abs_path)
            self.add("error", message, line, col, yaml_path if abs_path or yaml_path != "." else ".", check="schema")
        if schema_ok and bad_key is None:
            kind = self.parts[0] if self.parts and self.parts[0] in ROOTS else name
            ctx = CheckContext(kind, contents, node, self.options.seed_token_budget, self.policy)
            for line, col, yaml_path, severity, message in run_file_checks(ctx):
                self.add(severity, message, line, col, yaml_path, check="sdg")
            if self.options.documents and kind == "knowledge" and not any(f.is_error for f in self.findings):
                self._check_documents(contents, node)
            return self.result(contents=contents, version=version, node=node, fingerprint=leaf_fingerprint(contents))
        return self.result(contents=contents, version=version, node=node)

    def _check_documents(self, contents: Mapping[str, Any], node: yaml.Node | None) -> None:
        from sdg.taxonomy.chunking import chunk_documents
        from sdg.taxonomy.documents import DocumentSource, fetch_documents

        doc = contents["document"]
        source = DocumentSource(doc["repo"], str(doc["commit"]), tuple(doc["patterns"]))
        cache = self.options.documents_cache or Path.home() / ".cache" / "sdg" / "documents"
        try:
            fetched = fetch_documents(source, cache, self.policy, leaf=self.display)
            chunk_documents(fetched.documents, max_tokens=self.options.chunk_tokens,
                            overlap_tokens=self.options.chunk_overlap_tokens,
                            max_chunks=self.policy.max_chunks_per_leaf, leaf=self.display)
        except SdgError as exc:
            line, col = locate(node, ["document"])
            self.add("error", str(exc), line, col, ".document", check="documents")
            return
        for skipped in fetched.skipped:
            line, col = locate(node, ["document", "patterns"])
            self.add("warning", f"{skipped} matches a pattern but is not .md or .pdf; it is skipped",
                     line, col, ".document.patterns", check="documents")


_YAMLLINT_FIXES = {
    "key-duplicates": "remove or rename one of the duplicate keys",
    "trailing-spaces": "delete the spaces at the end of the line",
    "indentation": "indent consistently with spaces (2 per level is usual)",
    "colons": "write exactly one space after ':' and none before it",
    "hyphens": "write exactly one space after '-'",
    "empty-lines": "remove the extra blank lines",
    "new-line-at-end-of-file": "end the file with a newline",
    "new-lines": "use Unix line endings (\\n)",
    "document-start": "start the file with '---' or remove it consistently",
    "truthy": "quote the value or write true/false",
    "brackets": "fix the spacing inside [ ]",
    "braces": "fix the spacing inside { }",
    "commas": "write one space after each comma and none before",
    "comments": "write a space after '#' and two before an inline comment",
    "comments-indentation": "indent the comment like the content around it",
    "key-ordering": "order the keys as the rule requires",
    "line-length": "shorten the line or use a block scalar (|)",
}


def _yamllint_message(p) -> str:
    """yamllint's finding as InstructLab prints it (`desc (rule)`), plus what to do about it."""
    if not p.rule:
        return f"{p.desc}; {GENERIC_FIX}"
    fix = _YAMLLINT_FIXES.get(p.rule, f"fix the formatting yamllint's '{p.rule}' rule points at")
    return f"{p.desc} ({p.rule}); {fix}"


def _is_int_text(value: Any) -> bool:
    try:
        int(value)
        return not isinstance(value, bool)
    except (ValueError, TypeError, OverflowError):
        return False


def _version_of(contents: Mapping[str, Any]) -> int:
    """InstructLab's rule: the file's `version`, 1 when missing, 1 when not a number."""
    v = contents.get("version", 1)
    if isinstance(v, bool):
        return int(v)
    if isinstance(v, int):
        return v
    try:
        return int(v)
    except (ValueError, TypeError, OverflowError):
        return 1


def _first_non_string_key(node: yaml.Node | None) -> tuple[Any, int, int] | None:
    """JSON schema only knows text keys; report the first other key (a number, a list...) by position."""
    stack = [node] if node is not None else []
    seen: set[int] = set()
    while stack:
        n = stack.pop()
        if id(n) in seen:
            continue
        seen.add(id(n))
        if isinstance(n, yaml.MappingNode):
            for k, v in n.value:
                if not (isinstance(k, yaml.ScalarNode) and k.tag == "tag:yaml.org,2002:str"):
                    return (getattr(k, "value", "?") if isinstance(k, yaml.ScalarNode) else "<collection>",
                            k.start_mark.line + 1, k.start_mark.column + 1)
                stack.append(v)
        elif isinstance(n, yaml.SequenceNode):
            stack.extend(n.value)
    return None


PARALLEL_MIN_FILES = 64


def _validate_one(job: tuple[Path, tuple[str, ...], ValidationOptions]) -> FileResult:
    path, parts, options = job
    result = _FileValidator(path, parts, options).run()
    return dataclasses.replace(result, node=None)  # YAML nodes stay in the worker process


@functools.lru_cache(maxsize=64)
def _policy_for(policy: DocumentPolicy, root: Path) -> DocumentPolicy:
    return policy.for_taxonomy(root)


def _root_of(path: Path, parts: Sequence[str]) -> Path:
    """The taxonomy root of a file whose path inside the taxonomy is `parts`."""
    root = Path(path).absolute()
    for _ in parts:
        root = root.parent
    return root


def _run_all(jobs: list[tuple[Path, tuple[str, ...], ValidationOptions]], workers: int) -> list[FileResult]:
    """Files are independent: big batches use every core (each worker gets long runs of files)."""
    if workers <= 1 or len(jobs) < PARALLEL_MIN_FILES:
        return [_FileValidator(p, parts, o).run() for p, parts, o in jobs]
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    ctx = multiprocessing.get_context("fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
        return list(pool.map(_validate_one, jobs, chunksize=max(1, len(jobs) // (workers * 8))))


def validate_files(files: Iterable[Path], roots: Path | Sequence[Path] | None = None,
                   options: ValidationOptions = ValidationOptions(), *, workers: int | None = None) -> ValidationResult:
    """Validate every file; `roots` are the taxonomy roots the files' kinds are read from.

    `workers` processes (default: the CPUs this process may use) share batches of 64 files or more;
    results then carry no YAML node trees.
    """
    roots = [roots] if isinstance(roots, Path) else list(roots or [])
    jobs = [(Path(p).absolute(), taxonomy_parts(Path(p), roots), options) for p in files]
    if workers is None:
        workers = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if options.documents:
        workers = 1  # document fetches share one cache; keep them in one process
    results = _run_all(jobs, workers)
    findings = [f for r in results for f in r.findings]
    fingerprints: dict[str, list[str]] = {}
    for r in results:
        if r.fingerprint:
            fingerprints.setdefault(r.fingerprint, []).append(r.display)
    for displays in fingerprints.values():
        if len(displays) > 1:
            for d in displays:
                others = ", ".join(o for o in displays if o != d)
                findings.append(Finding(d, 1, 1, "warning", f"duplicate leaf: same seed examples as {others}; "
                                        "generation would make the same data twice, remove one", ".seed_examples", "sdg"))
    return ValidationResult(tuple(results), tuple(findings))
