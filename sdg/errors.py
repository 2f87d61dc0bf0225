"""The one exception hierarchy users see.

Every failure a user can act on is an `SdgError`; the CLI prints its message (no traceback) and exits
with `exit_code`. Messages say what went wrong, where (file:line, leaf, ref) and what to do.
"""

from __future__ import annotations


class SdgError(Exception):
    """Base of every user-facing error."""

    exit_code: int = 1


class UsageError(SdgError):
    """The command line itself is wrong (unknown flag, missing argument)."""

    exit_code = 2


class ConfigError(SdgError):
    """The composed configuration is invalid (unknown key, wrong type, unknown group option)."""

    exit_code = 2


class TaxonomyError(SdgError):
    """The taxonomy cannot be read: not a directory, not a git repo where one is needed, bad base ref."""


class GitError(TaxonomyError):
    """A git operation failed (clone, checkout, diff)."""


class ValidationFailed(TaxonomyError):
    """Validation found errors; `findings` holds all of them."""

    def __init__(self, message: str, findings: list | None = None) -> None:
        super().__init__(message)
        self.findings = list(findings or [])


class DocumentError(SdgError):
    """A knowledge document repository or pattern cannot be used."""


class UnsafeSourceError(DocumentError):
    """A repository URL, pattern or symlink tries to leave what it may touch."""
