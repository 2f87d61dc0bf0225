"""The run's dataset card: `README.md` in the run folder, in Hugging Face's dataset-card form, so the folder
can be pushed to the Hub as it is (`huggingface-cli upload --repo-type dataset ORG/NAME RUN_DIR`) and a
person opening it learns what it holds.

YAML front matter: `license` (`generate.license`, default `other`), `pretty_name`, `task_categories`
(text-generation), `tags`, `size_categories` (from the rows of the two phase files: the training data) and
`configs` (one per non-empty file: the phase files `knowledge_train_msgs` and `skills_train_msgs`, the legacy
`train`/`test` pair, and the knowledge leaves' `mmlubench` evaluation sets; paths relative to the folder).
Body: where the data came from (taxonomy, commit, leaves, teacher, pipeline, scale factor), the rows of
every JSONL file (counted in the files as written, not taken from a record), the quality summary, and how
to load, train on and evaluate with it.

Made from the manifest, the quality counts and the written files, after the manifest; written atomically.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import yaml

from sdg.output.atomic import write_text
from sdg.output.layout import RunLayout
from sdg.output.reports import LeafQuality, Manifest
from sdg.output.result import OutputFiles

DEFAULT_LICENSE = "other"
# Hugging Face's size_categories, each with its exclusive upper bound.
SIZE_CATEGORIES = ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M"),
                   (10_000_000, "1M<n<10M"), (100_000_000, "10M<n<100M"), (1_000_000_000, "100M<n<1B"),
                   (10_000_000_000, "1B<n<10B"), (100_000_000_000, "10B<n<100B"), (1_000_000_000_000, "100B<n<1T"))
TAGS = ("synthetic", "instructlab", "sdg", "lab")


def size_category(rows: int) -> str:
    for bound, name in SIZE_CATEGORIES:
        if rows < bound:
            return name
    return "n>1T"


def count_lines(path: Path) -> int:
    """JSON lines in a file: newlines, plus a last line without one."""
    n, last = 0, b"\n"
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            n += chunk.count(b"\n")
            last = chunk[-1:]
    return n + (last != b"\n")


@dataclass(frozen=True)
class CardFile:
    """One JSONL file (or folder of them) of the run, its rows as counted in the files, and what it is."""

    path: str  # relative to the run folder, '/'-separated; a folder ends with '/' (its files' rows summed)
    rows: int
    what: str


def _run_files(outputs: OutputFiles) -> list[tuple[Path | None, str]]:
    return [(outputs.test, "legacy test file: the seed examples, `{system, user, assistant}`"),
            (outputs.train, "legacy train file: every kept sample, `{system, user, assistant}`"),
            (outputs.messages, "legacy messages file: `train` as `{messages, metadata}`"),
            (outputs.knowledge_train_msgs, "LAB phase 1 (knowledge), mixed: `{id, messages, metadata, unmask}`"),
            (outputs.skills_train_msgs,
             "LAB phase 2 (skills + knowledge RAFT), mixed: `{id, messages, metadata, unmask}`")]


def card_files(outputs: OutputFiles) -> list[CardFile]:
    """The run's JSONL files with their rows counted in the files: the run-level files, every node dataset and
    evaluation set, then the per-leaf `preprocessed_` and `generated_` files as one row per folder."""
    def rel(p: Path) -> str:
        return p.relative_to(outputs.run_dir).as_posix()

    out = [CardFile(rel(p), count_lines(p), what) for p, what in _run_files(outputs) if p is not None and p.is_file()]
    for leaf in outputs.leaves:
        for p, what in ((leaf.node_dataset, "node dataset (skill)"),
                        (leaf.p07, "node dataset, phase 1 (knowledge QA + auxiliary)"),
                        (leaf.p10, "node dataset, phase 2 (RAFT copies + the phase-1 rows)"),
                        (leaf.mmlubench, "multiple-choice evaluation set (lm-eval MMLU format)")):
            if p is not None and p.is_file():
                out.append(CardFile(rel(p), count_lines(p), f"{what} of `{leaf.id}`"))
    for attr, what in (("preprocessed", "pipeline inputs"), ("generated", "generated rows as received")):
        files = [getattr(leaf, attr) for leaf in outputs.leaves if getattr(leaf, attr).is_file()]
        if files:
            out.append(CardFile(rel(files[0].parent) + "/", sum(count_lines(p) for p in files),
                                f"{what}, one file per leaf ({len(files)} files)"))
    return out


def _configs(outputs: OutputFiles, rows: Mapping[str, int]) -> list[dict[str, Any]]:
    """Hub configs for the non-empty files (a config whose file has no rows would not load)."""
    def rel(p: Path | None) -> str | None:
        return p.relative_to(outputs.run_dir).as_posix() if p is not None else None

    out: list[dict[str, Any]] = []
    for name, path in (("knowledge_train_msgs", rel(outputs.knowledge_train_msgs)),
                       ("skills_train_msgs", rel(outputs.skills_train_msgs))):
        if path and rows.get(path):
            out.append({"config_name": name, "data_files": [{"split": "train", "path": path}]})
    splits = (("train", rel(outputs.train)), ("test", rel(outputs.test)))
    legacy = [{"split": split, "path": path} for split, path in splits if path and rows.get(path)]
    if legacy:
        out.append({"config_name": "legacy", "data_files": legacy})
    bench = [p for p in (rel(leaf.mmlubench) for leaf in outputs.leaves) if p and rows.get(p)]
    if bench:
        out.append({"config_name": "mmlubench", "data_files": [{"split": "test", "path": bench}]})
    if out:
        out[0]["default"] = True
    return out


def _cell(value: Any) -> str:
    """A Markdown table cell: one line, pipes escaped."""
    return " ".join(str(value).split()).replace("|", "\\|") or "-"


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]


def _when(ts: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(ts)) if ts else "-"


def render_card(manifest: Manifest, outputs: OutputFiles, quality: Mapping[str, LeafQuality]) -> str:
    """The card's text (front matter + Markdown body)."""
    files = card_files(outputs)
    rows = {f.path: f.rows for f in files}
    config = manifest.config if isinstance(manifest.config, dict) else {}
    license_id = (config.get("generate") or {}).get("license") or DEFAULT_LICENSE
    tax, teacher, pipeline, counts = manifest.taxonomy, manifest.teacher, manifest.pipeline, manifest.counts
    tax_name = Path(str(tax.get("path") or "taxonomy")).name
    k_path, s_path = (p.relative_to(outputs.run_dir).as_posix() if p else None
                      for p in (outputs.knowledge_train_msgs, outputs.skills_train_msgs))
    training_rows = sum(rows.get(p, 0) for p in (k_path, s_path) if p)
    configs = _configs(outputs, rows)
    front: dict[str, Any] = {"license": license_id,
                             "pretty_name": f"sdg synthetic data from {tax_name} ({manifest.stamp})",
                             "task_categories": ["text-generation"], "tags": list(TAGS),
                             "size_categories": [size_category(training_rows)]}
    if configs:
        front["configs"] = configs

    commit = tax.get("commit") or "unknown (not a git repository)"
    dirty = " (with uncommitted changes)" if tax.get("dirty") else ""
    repository = (config.get("taxonomy") or {}).get("repository")
    failed = sum(q.failed_units for q in quality.values())
    state = ("complete" if not failed else f"incomplete: {failed} of {counts.units} units failed (teacher "
             "errors); running the same `sdg data generate` command again retries just those and rewrites this card")
    body: list[str] = [
        f"# {front['pretty_name']}", "",
        f"Synthetic training data generated by sdg {manifest.sdg_version} from an InstructLab "
        f"taxonomy with a teacher model, in the files and record formats of `ilab data generate`. State: {state}.", "",
        "## Source", "",
        *_table(("", ""), [
            ("taxonomy", f"`{tax.get('path')}`" + (f" (cloned from {repository})" if repository else "")),
            ("commit", f"`{commit}`{dirty}"), ("compared against", tax.get("base") or "every leaf (no base ref)"),
            ("teacher", f"{teacher.get('name')}: `{teacher.get('served_model_name') or teacher.get('model')}` "
                        f"({teacher.get('backend')})"),
            ("pipeline", f"{pipeline.get('name')}, scale factor {pipeline.get('scale_factor')}, "
                         f"{pipeline.get('samples_per_unit')} samples per unit"),
            ("seed", manifest.seed),
            ("generated", f"{_when(manifest.timings.get('started'))} to {_when(manifest.timings.get('finished'))}"),
            ("requests / output tokens", f"{counts.requests} / {counts.completion_tokens}")]),
        "", "## Leaves", "",
        *_table(("leaf", "kind", "units", "target samples", "kept samples"),
                [(f"`{leaf.id}`", leaf.kind, leaf.units, leaf.target_samples, leaf.kept) for leaf in manifest.leaves]),
        "", "## Files", "",
        "Rows as counted in each file (a folder: in all its files). The recipes (`*_recipe_*.yaml`) say how the "
        "phase files were mixed from the node datasets (every sample at 1.0)"
        + ("; the `*_task.yaml` files beside the `mmlubench_*` sets are their lm-eval tasks."
           if any(leaf.eval_task for leaf in outputs.leaves) else "."), "",
        *_table(("file", "rows", "what"), [(f"`{f.path}`", f.rows, f.what) for f in files]),
        "", "## Quality", "",
        "Per leaf: samples the pipeline produced, kept, and dropped by the judges and the parser, by reason "
        "(`quality_report.json` holds the same per leaf, `manifest.json` everything about the run).", "",
        *_table(("leaf", "generated", "kept", "dropped", "failed units"),
                [(f"`{lid}`", q.generated, q.kept,
                  ", ".join(f"{reason}: {n}" for reason, n in sorted(q.dropped.items())) or "none", q.failed_units)
                 for lid, q in quality.items()]),
        "", f"Total: {counts.generated} generated, {counts.kept} kept, from {counts.units} units "
            f"({failed} failed).",
        "", "## Use", "",
        *_use(outputs, k_path, s_path),
        "", "## Notes", "",
        f"- License: `{license_id}` (set by `generate.license`). The samples were written by the teacher model "
        "from the taxonomy's seed examples and documents: their terms apply too.",
        "- Synthetic data: filtered by the pipeline's judges where it has them, not reviewed by a person.",
    ]
    if any(leaf.mmlubench for leaf in outputs.leaves):
        body.append("- The `mmlubench` questions are built from the generated question/answer pairs: the right answer "
                    "plus three answers to other questions of the same leaf, shuffled by the run's seed; easier than "
                    "hand- or teacher-written distractors, so accuracy on them reads high.")
    return "---\n" + yaml.safe_dump(front, sort_keys=False, allow_unicode=True, width=1000) + "---\n\n" + \
        "\n".join(body) + "\n"


def _use(outputs: OutputFiles, k_path: str | None, s_path: str | None) -> list[str]:
    run = Path(outputs.run_dir).absolute()
    phase = s_path or k_path or "skills_train_msgs.jsonl"
    lines = ["With `datasets` (from this folder, or from the Hub once the folder is pushed as a dataset repository):",
             "", "```python", "from datasets import load_dataset", "",
             f'train = load_dataset("json", data_files="{run / phase}", split="train")']
    if k_path or s_path:
        lines.append(f'train = load_dataset("ORG/NAME", "{"skills_train_msgs" if s_path else "knowledge_train_msgs"}", '
                     'split="train")  # after `huggingface-cli upload --repo-type dataset ORG/NAME .`')
    lines += ["```", ""]
    if k_path and s_path:
        lines += ["LAB multi-phase training with InstructLab (phase 1 knowledge, phase 2 skills):", "", "```bash",
                  f"ilab model train --strategy lab-multiphase --phased-phase1-data {run / k_path} "
                  f"--phased-phase2-data {run / s_path}", "```", ""]
    lines += ["With instructlab-training directly (one phase per call; `data_path` is a phase file):", "", "```python",
              "from instructlab.training import TorchrunArgs, TrainingArgs, run_training", "",
              f'args = TrainingArgs(model_path="STUDENT", data_path="{run / phase}", ckpt_output_dir="checkpoints",',
              '                     data_output_dir="processed", max_seq_len=4096, max_batch_len=20000,',
              "                     effective_batch_size=128, learning_rate=2e-5, num_epochs=7)",
              'run_training(TorchrunArgs(nnodes=1, nproc_per_node=1, node_rank=0, rdzv_id=1, '
              'rdzv_endpoint="127.0.0.1:29500"), args)', "```"]
    tasks = [leaf for leaf in outputs.leaves if leaf.eval_task is not None]
    if tasks:
        folder = tasks[0].eval_task.parent  # type: ignore[union-attr]
        lines += ["", "Knowledge evaluation with lm-eval (every leaf's task is tagged `mmlu_pr`):", "", "```bash",
                  f"lm_eval --model hf --model_args pretrained=STUDENT --include_path {folder} --tasks mmlu_pr", "```"]
    return lines


def write_dataset_card(run_dir: Path, manifest: Manifest, outputs: OutputFiles,
                       quality: Mapping[str, LeafQuality]) -> Path:
    """Write `README.md` into the run folder (atomically); returns its path."""
    path = RunLayout(Path(run_dir), outputs.stamp).dataset_card
    write_text(path, render_card(manifest, outputs, quality))
    return path


def parse_card(text: str) -> tuple[dict[str, Any], str]:
    """(front matter, body) of a card: what a reader of the file (the Hub, a test) sees."""
    if not text.startswith("---\n"):
        raise ValueError("a dataset card starts with a '---' line")
    end = text.index("\n---\n", 4)
    return yaml.safe_load(text[4:end]) or {}, text[end + 5:]
