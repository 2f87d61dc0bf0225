"""The one exception hierarchy users see: every `SdgError` subclass is defined here.

Every failure a user can act on is an `SdgError`; the CLI prints its message (no traceback) and exits
with `exit_code`. Messages say what went wrong, where (file:line, leaf, ref, node) and what to do.

    SdgError
    ├── UsageError (2)         the command line itself is wrong
    ├── ConfigError (2)        the composed config: unknown key, wrong type, value out of range
    ├── TaxonomyError          the taxonomy cannot be read
    │   ├── GitError           a git operation failed
    │   └── ValidationFailed   validation found errors (`findings` holds all of them)
    ├── DocumentError          a knowledge document repository or pattern cannot be used
    │   └── UnsafeSourceError  a URL, pattern or symlink tries to leave what it may touch
    ├── TeacherError           the teacher model or its servers
    │   ├── ModelError         a model cannot be found, downloaded or fetched
    │   ├── GpuPlanError       tensor parallelism does not fit the visible GPUs
    │   ├── TeacherStartError  a server did not become ready (or died)
    │   └── TeacherBroken      most recent requests failed: the run stops, finished units are kept
    ├── RunError               a generate run as a whole
    │   ├── NothingToGenerate  no new or changed leaves
    │   ├── RunConflict        an unfinished run exists with a different config
    │   ├── RunBusy            another process holds the run folder's lease
    │   └── JournalError       a journal cannot be read or written
    ├── OutputError            the files a run writes or reads back
    │   └── RecipeError        a mixing recipe or one of its datasets
    └── ClusterError           Slurm and Ray
        ├── JobFailed          the Slurm job ended without a complete run
        ├── JobNotFound        no such job folder under cluster.job_dir
        ├── NodeFailed         a node's worker died or raised
        ├── RendezvousError    a node never showed up, or reported a failure
        └── RayStartError      a Ray head or worker did not come up

`Interrupted` is not an SdgError: it is how SIGTERM (and friends) unwind a run (see sdg.signals).
"""

from __future__ import annotations


class SdgError(Exception):
    """Base of every user-facing error."""

    exit_code: int = 1


class UsageError(SdgError):
    """The command line itself is wrong (unknown flag, missing argument)."""

    exit_code = 2


class ConfigError(SdgError):
    """The composed configuration is invalid (unknown key, wrong type, unknown group option, out of range)."""

    exit_code = 2


# --- taxonomy and documents ---------------------------------------------------------------------------

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


# --- teacher ------------------------------------------------------------------------------------------

class TeacherError(SdgError):
    """The teacher model or its servers."""


class ModelError(TeacherError):
    """A teacher model cannot be found, downloaded or fetched; the message says which and what to do."""


class GpuPlanError(TeacherError):
    """The requested tensor parallelism does not fit the GPUs that are visible."""


class TeacherStartError(TeacherError):
    """A teacher server did not become ready; the message carries the reason and its log's last lines."""

    reason: str = ""


class TeacherBroken(TeacherError):
    """Most recent requests failed: the teacher is down or misconfigured. Finished work is journaled."""


# --- a generate run -----------------------------------------------------------------------------------

class RunError(SdgError):
    """A generate run as a whole."""


class NothingToGenerate(RunError):
    """No new or changed leaves: said clearly, with the base ref that was used."""


class RunConflict(RunError):
    """An unfinished run exists with a different config."""


class JournalError(RunError):
    """A journal cannot be read or written (disk full, permissions)."""


class RunBusy(RunError):
    """Another process holds the run folder's lease (the same run is already being written)."""


# --- outputs ------------------------------------------------------------------------------------------

class OutputError(SdgError):
    """The files a run writes, or reads back (recipes, datasets)."""


class RecipeError(OutputError):
    """A mixing recipe or one of its datasets cannot be used."""


# --- Slurm and Ray ------------------------------------------------------------------------------------

class ClusterError(SdgError):
    """Slurm jobs and the Ray cluster inside them."""


class JobFailed(ClusterError):
    """The Slurm job ended without a complete run (failed, cancelled, timed out for good)."""


class JobNotFound(ClusterError):
    """No such job folder under cluster.job_dir."""


class NodeFailed(ClusterError):
    """A node's worker died or raised; finished units are journaled, the same job/command resumes."""


class RendezvousError(ClusterError):
    """A node waited for another one that never showed up, or that reported a failure."""


class RayStartError(ClusterError):
    """A Ray head or worker did not come up; the message holds its log's last lines."""


# --- signals ------------------------------------------------------------------------------------------

class Interrupted(BaseException):
    """A signal (SIGTERM from Slurm or `kill`, SIGINT, SIGHUP) unwinding the work: servers stop, journals
    close, finished units stay. A BaseException so no `except Exception` swallows it. `exit_code` is the
    shell's 128 + signal number."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"signal {signum}")
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum
