"""Validation findings: one record per problem, printed as `path:line:col [yaml.path] severity: message`."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Iterable, Literal

Severity = Literal["error", "warning"]


@dataclass(frozen=True)
class Finding:
    """One problem in one file, at the line and column of the YAML node it is about."""

    path: str
    line: int
    col: int
    severity: Severity
    message: str
    yaml_path: str = ""
    check: str = ""  # where it came from: read | yaml | yamllint | schema | sdg | documents

    def format(self) -> str:
        where = f"{self.path}:{self.line}:{self.col}"
        if self.yaml_path:
            where += f" [{self.yaml_path}]"
        return f"{where} {self.severity}: {self.message}"

    @property
    def is_error(self) -> bool:
        return self.severity == "error"


def count(findings: Iterable[Finding]) -> tuple[int, int]:
    """(errors, warnings)."""
    errors = warnings = 0
    for f in findings:
        if f.is_error:
            errors += 1
        else:
            warnings += 1
    return errors, warnings


def to_json(findings: Iterable[Finding]) -> list[dict]:
    return [asdict(f) for f in findings]


def dumps(obj: object) -> str:
    return json.dumps(obj, indent=2, sort_keys=False)
