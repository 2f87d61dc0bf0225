"""Generated rows -> the files of an InstructLab `ilab data generate` run, so `ilab model train`,
instructlab-training and existing tooling read them unchanged.

Per leaf: `preprocessed_<ds>/<leaf>.jsonl` (pipeline inputs), `generated_<ds>/<leaf>.jsonl` (rows as
received), `node_datasets_<ds>/<leaf>.jsonl` (skills) or `<leaf>_p07.jsonl` + `<leaf>_p10.jsonl`
(knowledge), plus a knowledge leaf's evaluation set `mmlubench_<leaf>.jsonl` and its lm-eval task
`<leaf>_task.yaml` (sdg.output.mmlubench). Per run: the legacy `test_`, `train_`, `messages_` files, the two
recipes and the two mixed phase files `knowledge_train_msgs_<ds>` (LAB phase 1) and `skills_train_msgs_<ds>`
(phase 2).

Recipes are honest: every dataset at 1.0, i.e. everything that was generated, where InstructLab caps
each skill leaf at 30 samples whatever the scale factor asked for. Everything is deterministic given
`seed`, and every file is written atomically. Leaves are written one at a time (the train and
messages files are streamed as they go), so `generated` may be a lazy mapping that reads one leaf's
rows when asked: memory is then bounded by the largest leaf, not the run.
"""

from __future__ import annotations

import contextlib
from dataclasses import replace
from pathlib import Path
from typing import Mapping, Optional, Sequence

from sdg.output.atomic import atomic_open, dumps, write_jsonl
from sdg.output.row_fields import has_qa
from sdg.output.knowledge import knowledge_datasets
from sdg.output.layout import RunLayout
from sdg.output.legacy import messages_record, seed_test_records, train_record
from sdg.output.mix import mix_recipe
from sdg.output.mmlubench import mcq_records, write_eval_task
from sdg.output.preprocessed import preprocessed_rows
from sdg.output.recipe import Recipe, RecipeEntry, write_recipe
from sdg.output.result import LeafOutputs, OutputFiles, OutputWarning
from sdg.output.skills import skill_node_records
from sdg.pipeline.types import Row
from sdg.taxonomy.leaves import KnowledgeLeaf, Leaf

ALL_ROWS = 1.0


def _check_names(leaves: Sequence[Leaf]) -> None:
    """Each leaf once, each file name once (a clash would make two leaves share files)."""
    seen: dict[str, str] = {}
    ids: set[str] = set()
    for leaf in leaves:
        if leaf.id in ids:
            raise ValueError(f"leaf '{leaf.id}' is listed twice")
        ids.add(leaf.id)
        other = seen.setdefault(leaf.name, leaf.id)
        if other != leaf.id:
            raise ValueError(f"leaves '{other}' and '{leaf.id}' share the file name '{leaf.name}'")


def _relative(path: Path, base: Path) -> str:
    return path.relative_to(base).as_posix()


def _write_leaf(layout: RunLayout, leaf: Leaf, rows: Sequence[Row], *, system_prompt: str, seed: int,
                warnings: list[OutputWarning]) -> LeafOutputs:
    """The leaf's preprocessed, generated and node dataset files."""
    inputs = write_jsonl(layout.preprocessed(leaf.name), preprocessed_rows(leaf))
    write_jsonl(layout.generated(leaf.name), rows)
    usable = sum(1 for r in rows if has_qa(r))
    if not rows:
        warnings.append(OutputWarning("no generated rows: its node dataset is empty", leaf.id))
    elif usable < len(rows):
        warnings.append(OutputWarning(f"{len(rows) - usable} of {len(rows)} generated rows have a blank question "
                                      "or response and are left out of the training files", leaf.id))
    out = LeafOutputs(id=leaf.id, name=leaf.name, kind=leaf.kind, preprocessed=layout.preprocessed(leaf.name),
                      generated=layout.generated(leaf.name), input_rows=inputs, generated_rows=len(rows),
                      training_rows=usable)
    if not isinstance(leaf, KnowledgeLeaf):
        node = layout.node_dataset(leaf.name)
        n = write_jsonl(node, skill_node_records(rows, system_prompt=system_prompt, seed=seed))
        return replace(out, node_dataset=node, node_rows=n)
    if not leaf.chunks:
        warnings.append(OutputWarning("knowledge leaf has no document chunks: no preprocessed rows", leaf.id))
    ds = knowledge_datasets(leaf.id, (c.text for c in leaf.chunks), rows, seed=seed)
    if usable and ds.distractor_documents < 2:
        warnings.append(OutputWarning("only one unique document: its phase-2 (RAFT) samples have no "
                                      "distractor documents", leaf.id))
    for kind in ds.unknown_dataset_types:
        warnings.append(OutputWarning(f"no auxiliary instructions for dataset_type '{kind}': "
                                      "no auxiliary samples for it", leaf.id))
    p07, p10 = layout.node_dataset(leaf.name, "_p07"), layout.node_dataset(leaf.name, "_p10")
    out = replace(out, p07=p07, p07_rows=write_jsonl(p07, ds.p07), p10=p10, p10_rows=write_jsonl(p10, ds.p10))
    mcq = mcq_records(leaf.id, leaf.domain, rows, seed=seed)
    bench, task = layout.mmlubench(leaf.name), layout.eval_task(leaf.name)
    if mcq.skipped:
        warnings.append(OutputWarning(mcq.skipped, leaf.id))
        for stale in (bench, task):  # from an earlier write of this folder: they would no longer match the run
            stale.unlink(missing_ok=True)
        return out
    return replace(out, mmlubench=bench, eval_task=task, mmlubench_rows=write_eval_task(bench, task, leaf.name, mcq))


def _mix(recipe: Path, output: Path, entries: Sequence[RecipeEntry], *, system_prompt: str,
         seed: int) -> tuple[Optional[Path], Optional[Path], int]:
    """Write a recipe and its mixed file; (None, None, 0) when no dataset feeds this phase."""
    if not entries:
        return None, None, 0
    write_recipe(recipe, Recipe(tuple(entries), system_prompt))
    n = mix_recipe(recipe, output, system_prompt=system_prompt, seed=seed)
    if n == 0:  # an empty phase file stops instructlab-training ("Malformed or missing data"): leave it out
        output.unlink(missing_ok=True)
        return recipe, None, 0
    return recipe, output, n


def write_outputs(run_dir: Path, stamp: str, leaves: Sequence[Leaf], generated: Mapping[str, Sequence[Row]], *,
                  system_prompt: str, seed: int = 42) -> OutputFiles:
    """Write every output file of a run into `run_dir`; `generated` maps leaf id -> its rows."""
    layout = RunLayout(Path(run_dir), stamp)
    _check_names(leaves)
    layout.make_dirs()
    warnings: list[OutputWarning] = []
    known = {leaf.id for leaf in leaves}
    for lid in generated:
        if lid not in known:
            warnings.append(OutputWarning(f"{len(generated[lid])} generated rows ignored: not a leaf of this run", lid))

    tests: list[dict] = []
    n_train = 0
    knowledge_entries: list[RecipeEntry] = []
    skills_entries: list[RecipeEntry] = []
    outs: list[LeafOutputs] = []
    with contextlib.ExitStack() as files:
        train_f = files.enter_context(atomic_open(layout.train))
        messages_f = files.enter_context(atomic_open(layout.messages))
        for leaf in leaves:
            rows = list(generated.get(leaf.id, ()))
            lo = _write_leaf(layout, leaf, rows, system_prompt=system_prompt, seed=seed, warnings=warnings)
            outs.append(lo)
            if lo.p07 is not None and lo.p10 is not None:
                knowledge_entries.append(RecipeEntry(_relative(lo.p07, layout.run_dir), ALL_ROWS))
                skills_entries.append(RecipeEntry(_relative(lo.p10, layout.run_dir), ALL_ROWS))
            elif lo.node_dataset is not None:
                skills_entries.append(RecipeEntry(_relative(lo.node_dataset, layout.run_dir), ALL_ROWS))
            tests.extend(seed_test_records(leaf, system_prompt))
            for t in (train_record(r, system_prompt) for r in rows):
                if t is not None:
                    train_f.write(dumps(t) + "\n")
                    messages_f.write(dumps(messages_record(t)) + "\n")
                    n_train += 1
            del rows
    write_jsonl(layout.test, tests)
    k_recipe, k_train, k_rows = _mix(layout.knowledge_recipe, layout.knowledge_train_msgs, knowledge_entries,
                                     system_prompt=system_prompt, seed=seed)
    s_recipe, s_train, s_rows = _mix(layout.skills_recipe, layout.skills_train_msgs, skills_entries,
                                     system_prompt=system_prompt, seed=seed)
    for recipe, train, what in ((k_recipe, k_train, "knowledge (LAB phase 1)"), (s_recipe, s_train, "skills (phase 2)")):
        if recipe is not None and train is None:
            warnings.append(OutputWarning(f"no {what} samples: its training file is not written (an empty file "
                                          "stops instructlab-training)"))
    return OutputFiles(
        run_dir=layout.run_dir, stamp=stamp, test=layout.test, train=layout.train, messages=layout.messages,
        knowledge_recipe=k_recipe, skills_recipe=s_recipe, knowledge_train_msgs=k_train, skills_train_msgs=s_train,
        leaves=tuple(outs), test_rows=len(tests), train_rows=n_train, knowledge_train_rows=k_rows,
        skills_train_rows=s_rows, warnings=tuple(warnings))
