"""Prompt templates: `{column}` placeholders substituted in one pass, never `str.format`.

Seeds are user text and may hold braces (code, JSON, LaTeX); only the template is scanned for
placeholders, and inserted values are never scanned again, so a `{` in a seed cannot break rendering
or pull in another column. `{{` and `}}` in a template are literal braces.

A prompt file holds a system part and a user part, each introduced by a marker line:

    <<<system>>>
    You write ...
    <<<user>>>
    Task: {task_description}
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from sdg.errors import ConfigError

_TOKEN = re.compile(r"\{\{|\}\}|\{([A-Za-z_][A-Za-z0-9_]*)\}")
_SECTION = re.compile(r"^<<<(system|user)>>>[ \t]*$", re.M)


@dataclass(frozen=True)
class Template:
    """A parsed template: its text and the placeholders it names, in order of first use."""

    text: str
    fields: tuple[str, ...]

    @classmethod
    def parse(cls, text: str) -> Template:
        seen: dict[str, None] = {}
        for m in _TOKEN.finditer(text):
            if m.group(1):
                seen.setdefault(m.group(1))
        return cls(text, tuple(seen))

    def render(self, values: Mapping[str, Any]) -> str:
        """Substitute placeholders; KeyError names the first missing column."""

        def sub(m: re.Match[str]) -> str:
            tok = m.group(0)
            if tok == "{{":
                return "{"
            if tok == "}}":
                return "}"
            return as_text(values[m.group(1)])

        return _TOKEN.sub(sub, self.text)


def as_text(value: Any) -> str:
    """How a column value appears in a prompt: strings as is, None as empty, others as JSON."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, (bool, int, float)):
        return str(value)
    try:
        return json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        return str(value)


@dataclass(frozen=True)
class PromptFile:
    """The two templates of one prompt file, and where it came from (for errors and the fingerprint)."""

    path: Path
    system: Template
    user: Template
    raw: bytes

    @property
    def fields(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(self.system.fields + self.user.fields))

    def messages(self, values: Mapping[str, Any]) -> list[dict]:
        msgs = []
        system = self.system.render(values).strip()
        if system:
            msgs.append({"role": "system", "content": system})
        msgs.append({"role": "user", "content": self.user.render(values).strip()})
        return msgs


def parse_prompt(text: str, path: Path) -> tuple[Template, Template]:
    """Split a prompt file into (system, user); a file with no markers is all user text."""
    parts = _SECTION.split(text)
    if len(parts) == 1:
        if not text.strip():
            raise ConfigError(f"{path}: the prompt file is empty")
        return Template.parse(""), Template.parse(text)
    if parts[0].strip():
        raise ConfigError(f"{path}: text before the first <<<system>>>/<<<user>>> line: {parts[0].strip()[:60]!r}")
    sections: dict[str, str] = {}
    for name, body in zip(parts[1::2], parts[2::2]):
        if name in sections:
            raise ConfigError(f"{path}: <<<{name}>>> appears twice")
        sections[name] = body.strip("\n")
    if not sections.get("user", "").strip():
        raise ConfigError(f"{path}: no <<<user>>> section (or it is empty); the user message is required")
    return Template.parse(sections.get("system", "")), Template.parse(sections["user"])


def load_prompt(path: Path) -> PromptFile:
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise ConfigError(f"cannot read prompt file {path}: {e.strerror or e}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: prompt files must be UTF-8 text") from None
    system, user = parse_prompt(text, path)
    return PromptFile(path, system, user, raw)
