"""`sdg data list`: the generate runs under an output dir, each in one typed record.

A run folder is a directory of the output dir (or of a sweep's `multirun/<time>/<n>/`) holding sdg's
`run.json`, `manifest.json` or `journal/`, or InstructLab's own output files. Its state:

  complete      run.json says complete: every unit is done and the outputs are written.
  incomplete    run.json says incomplete: the outputs are written, but some units failed (teacher errors);
                the same `sdg data generate` command retries just those.
  interrupted   run.json says running: the run was stopped before it finished (killed, preempted, the
                machine went down), or it is still running; nothing here can tell the two apart, so
                `last_write` (the newest journal or run.json write) is given. The same command resumes it.
  broken        sdg's files are there but run.json is missing or unreadable: it cannot be resumed.
  instructlab   written by `ilab data generate` (no sdg files): listed with its stamp, nothing else.

Cheap by design: run.json and manifest.json are read whole, journals only up to each line's unit id and
status (a finished unit's line starts `{"unit":...,"status":...}`), so a listing never parses samples.
Kept samples are known only for a finished run (its manifest); an interrupted one shows units done.

This module reads the files the engine writes but does not import the engine (output never does): the
two names it shares with `sdg.engine.rundir` and `sdg.engine.journal` are checked equal by a test.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Mapping

from sdg.output.reports import MANIFEST

RUN_FILE = "run.json"  # = sdg.engine.rundir.RUN_FILE
JOURNAL_DIR = "journal"  # = RunDir.journal_dir's name
MULTIRUN_DIR = "multirun"  # sweeps: <output-dir>/multirun/<time>/<n>/<run>

STATES = (COMPLETE, INCOMPLETE, INTERRUPTED, BROKEN, INSTRUCTLAB) = (
    "complete", "incomplete", "interrupted", "broken", "instructlab")
_RUN_STATUS = {"complete": COMPLETE, "incomplete": INCOMPLETE, "running": INTERRUPTED}

# compact (orjson, since 2026-12) or with the stdlib's spaces (older journals)
_JOURNAL_HEAD = re.compile(rb'^\{"unit": ?"((?:[^"\\]|\\.)*)", ?"status": ?"(done|failed)"')
_ILAB_FILES = re.compile(r"^(?:knowledge_train_msgs|skills_train_msgs|train|test|messages)_.*\.jsonl$|"
                         r"^node_datasets_.+$")
_ILAB_STAMP = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}_\d{2}_\d{2}")


@dataclass(frozen=True)
class RunListing:
    """One run folder as `sdg data list` shows it; None = not known for this run."""

    path: str  # absolute
    name: str  # relative to the listed output dir
    state: str  # one of STATES
    stamp: str | None = None  # InstructLab's <ds> of the file names
    started: float | None = None
    finished: float | None = None
    last_write: float | None = None  # newest write of run.json or a journal (how recently a run moved)
    taxonomy_commit: str | None = None
    taxonomy_dirty: bool | None = None
    teacher: str | None = None
    pipeline: str | None = None
    scale_factor: int | None = None
    leaves: int | None = None
    units: int | None = None  # planned (known once a manifest was written)
    units_done: int | None = None
    units_failed: int | None = None
    kept: int | None = None  # samples kept (finished runs)
    note: str = ""  # what to do about it, or what is wrong

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _read_json(path: Path) -> tuple[dict[str, Any] | None, str]:
    """(object, '') or (None, why not)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None, f"no {path.name}"
    except (OSError, ValueError) as exc:
        return None, f"{path.name} is unreadable ({type(exc).__name__})"
    if not isinstance(data, dict):
        return None, f"{path.name} is not a JSON object"
    return data, ""


def journal_units(journal_dir: Path) -> tuple[int, int]:
    """(units done, units failed and never done) over every journal file of a run, reading only the head of
    each line. A torn last line (no newline) is not counted, as the engine does not count it."""
    status: dict[bytes, bool] = {}  # unit id -> done
    if not journal_dir.is_dir():
        return 0, 0
    for path in sorted(journal_dir.glob("*.jsonl")):
        try:
            with open(path, "rb") as f:
                for line in f:
                    if not line.endswith(b"\n"):
                        break
                    m = _JOURNAL_HEAD.match(line, 0, 512)
                    if m:
                        unit = path.name.split(".", 1)[0].encode() + b"\x00" + m.group(1)
                        status[unit] = status.get(unit, False) or m.group(2) == b"done"
        except OSError:
            continue
    done = sum(status.values())
    return done, len(status) - done


def _mtime(*paths: Path) -> float | None:
    times = []
    for p in paths:
        try:
            times.append(p.stat().st_mtime)
        except OSError:
            pass
    return max(times) if times else None


def _last_write(folder: Path) -> float | None:
    journal = folder / JOURNAL_DIR
    files = list(journal.glob("*.jsonl")) if journal.is_dir() else []
    return _mtime(folder / RUN_FILE, *files)


def _str(value: Any) -> str | None:
    return None if value is None else str(value)


def _teacher(t: Mapping[str, Any]) -> str | None:
    name, model = t.get("name"), t.get("served_model_name") or t.get("model")
    if name and model and model != name:
        return f"{name} ({model})"
    return _str(name or model)


def _is_ilab(folder: Path) -> bool:
    try:
        return any(_ILAB_FILES.match(p.name) for p in folder.iterdir())
    except OSError:
        return False


def _ilab_listing(folder: Path, name: str) -> RunListing:
    stamps = sorted({m.group(0) for p in folder.iterdir() for m in [_ILAB_STAMP.search(p.name)] if m})
    return RunListing(str(folder.absolute()), name, INSTRUCTLAB, stamp=stamps[-1] if stamps else None,
                      last_write=_mtime(folder), note="written by `ilab data generate`")


def read_run(folder: Path, name: str | None = None) -> RunListing | None:
    """The listing of one folder, or None when it is not a run folder."""
    name = name or folder.name
    has_run, has_manifest, has_journal = ((folder / f).exists() for f in (RUN_FILE, MANIFEST, JOURNAL_DIR))
    if not (has_run or has_manifest or has_journal):
        return _ilab_listing(folder, name) if _is_ilab(folder) else None
    state_data, why = _read_json(folder / RUN_FILE)
    manifest, _ = _read_json(folder / MANIFEST) if has_manifest else (None, "")
    fields: dict[str, Any] = {"path": str(folder.absolute()), "name": name, "last_write": _last_write(folder)}
    components: Mapping[str, Any] = {}
    if state_data is not None:
        status = state_data.get("status")
        state = _RUN_STATUS.get(status) if isinstance(status, str) else None
        if state is None:
            state, why = BROKEN, f"run.json has an unknown status {status!r}"
        components = state_data.get("components") if isinstance(state_data.get("components"), dict) else {}
        fields.update(stamp=_str(state_data.get("stamp")), started=state_data.get("started"),
                      finished=state_data.get("finished"))
    else:
        state = BROKEN
    if isinstance(components.get("teacher"), dict):
        fields["teacher"] = _teacher(components["teacher"])
    if isinstance(components.get("leaves"), dict):
        fields["leaves"] = len(components["leaves"])
    if isinstance(components.get("scale"), int):
        fields["scale_factor"] = components["scale"]
    if manifest is not None:
        tax = manifest.get("taxonomy") if isinstance(manifest.get("taxonomy"), dict) else {}
        pipe = manifest.get("pipeline") if isinstance(manifest.get("pipeline"), dict) else {}
        counts = manifest.get("counts") if isinstance(manifest.get("counts"), dict) else {}
        fields.update(taxonomy_commit=_str(tax.get("commit")), taxonomy_dirty=tax.get("dirty"),
                      pipeline=_str(pipe.get("name")), units=counts.get("units"))
        if isinstance(manifest.get("teacher"), dict):
            fields["teacher"] = _teacher(manifest["teacher"]) or fields.get("teacher")
        if isinstance(manifest.get("leaves"), list):
            fields["leaves"] = len(manifest["leaves"])
        if isinstance(pipe.get("scale_factor"), int):
            fields["scale_factor"] = pipe["scale_factor"]
        fields.setdefault("stamp", _str(manifest.get("stamp")))
    if state in (COMPLETE, INCOMPLETE) and manifest is not None:
        counts = manifest.get("counts") if isinstance(manifest.get("counts"), dict) else {}
        units, failed = counts.get("units"), counts.get("units_failed")
        fields.update(kept=counts.get("kept"), units_failed=failed,
                      units_done=units - failed if isinstance(units, int) and isinstance(failed, int) else None)
    else:  # still being written, or never finished: what the journals hold now (a stale manifest's counts would lie)
        fields["units_done"], fields["units_failed"] = journal_units(folder / JOURNAL_DIR)
    notes = {COMPLETE: "",
             INCOMPLETE: "some units failed: the same `sdg data generate` command retries them",
             INTERRUPTED: "interrupted or still running: the same `sdg data generate` command resumes it",
             BROKEN: f"{why or 'run.json is missing'}: cannot be resumed; `generate.resume=fresh` starts anew"}
    if state in (COMPLETE, INCOMPLETE) and manifest is None:
        notes[state] = f"{notes[state]}; no readable {MANIFEST}".lstrip("; ")
    return RunListing(**fields, state=state, note=notes[state])


def _candidates(output_dir: Path) -> list[tuple[Path, str]]:
    out: list[tuple[Path, str]] = []
    for d in sorted(p for p in output_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
        if d.name == MULTIRUN_DIR:
            out += [(run, run.relative_to(output_dir).as_posix())
                    for run in sorted(d.glob("*/*/*")) if run.is_dir() and not run.name.startswith(".")]
        else:
            out.append((d, d.name))
    return out


def list_runs(output_dir: Path) -> list[RunListing]:
    """Every run folder under `output_dir` (and its sweeps), by name (dated names: oldest first)."""
    output_dir = Path(output_dir).expanduser()
    if not output_dir.is_dir():
        return []
    return [r for d, name in _candidates(output_dir) if (r := read_run(d, name)) is not None]


def _ago(ts: float | None, now: float) -> str:
    if ts is None:
        return "-"
    s = max(0.0, now - ts)
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if s >= size:
            return f"{int(s // size)} {unit} ago"
    return f"{int(s)} s ago"


def format_runs(runs: list[RunListing], output_dir: Path, *, now: float | None = None) -> str:
    """The text table of `sdg data list`, then one line per run that needs a word."""
    now = time.time() if now is None else now
    if not runs:
        return f"No runs in {output_dir}."

    def dash(v: Any) -> str:
        return "-" if v is None else str(v)

    header = ("RUN", "STATE", "STARTED", "COMMIT", "TEACHER", "PIPELINE", "LEAVES", "UNITS DONE", "KEPT")
    rows = []
    for r in runs:
        started = time.strftime("%Y-%m-%d %H:%M", time.localtime(r.started)) if r.started else dash(r.stamp)
        commit = (r.taxonomy_commit or "-")[:10] + ("+" if r.taxonomy_dirty else "")
        units = "-" if r.units_done is None else f"{r.units_done}/{dash(r.units)}" if r.units else str(r.units_done)
        rows.append((r.name, r.state, started, commit, dash(r.teacher), dash(r.pipeline), dash(r.leaves), units,
                     dash(r.kept)))
    widths = [max(len(str(row[i])) for row in (header, *rows)) for i in range(len(header))]
    lines = [f"Runs in {output_dir}:"]
    lines += ["  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip() for row in (header, *rows)]
    for r in runs:
        if r.state == INTERRUPTED:
            lines.append(f"{r.name}: {r.note} (last write {_ago(r.last_write, now)})")
        elif r.note and r.state != INSTRUCTLAB:
            lines.append(f"{r.name}: {r.note}")
    return "\n".join(lines)
