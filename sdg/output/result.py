"""What `write_outputs` wrote: every path, per-leaf counts and warnings, as typed records."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional


@dataclass(frozen=True)
class OutputWarning:
    """Something a user should know about the outputs (not an error: the files were written)."""

    message: str
    leaf_id: Optional[str] = None

    def __str__(self) -> str:
        return f"{self.leaf_id}: {self.message}" if self.leaf_id else self.message


@dataclass(frozen=True)
class LeafOutputs:
    """One leaf's files and row counts. Skill leaves have `node_dataset`; knowledge leaves `p07`/`p10` and,
    when they have enough distinct answers, `mmlubench` + `eval_task`."""

    id: str
    name: str
    kind: str
    preprocessed: Path
    generated: Path
    input_rows: int
    generated_rows: int
    training_rows: int  # generated rows with a non-blank question and response
    node_dataset: Optional[Path] = None
    node_rows: int = 0
    p07: Optional[Path] = None
    p07_rows: int = 0
    p10: Optional[Path] = None
    p10_rows: int = 0
    mmlubench: Optional[Path] = None  # knowledge leaves with at least 4 distinct answers: the MCQ evaluation set
    mmlubench_rows: int = 0
    eval_task: Optional[Path] = None  # ...and the lm-eval task file that reads it

    @property
    def paths(self) -> tuple[Path, ...]:
        return tuple(p for p in (self.preprocessed, self.generated, self.node_dataset, self.p07, self.p10,
                                 self.mmlubench, self.eval_task) if p)


@dataclass(frozen=True)
class OutputFiles:
    """Every file of one run's outputs. A recipe and its mixed file are None when no leaf feeds that
    phase (no knowledge leaves: no knowledge recipe and no phase-1 file), as in InstructLab."""

    run_dir: Path
    stamp: str
    test: Path
    train: Path
    messages: Path
    knowledge_recipe: Optional[Path]
    skills_recipe: Optional[Path]
    knowledge_train_msgs: Optional[Path]
    skills_train_msgs: Optional[Path]
    leaves: tuple[LeafOutputs, ...]
    test_rows: int
    train_rows: int
    knowledge_train_rows: int
    skills_train_rows: int
    warnings: tuple[OutputWarning, ...]

    @property
    def paths(self) -> tuple[Path, ...]:
        """Every file written, run-level files first."""
        run = (self.test, self.train, self.messages, self.knowledge_recipe, self.skills_recipe,
               self.knowledge_train_msgs, self.skills_train_msgs)
        return tuple(p for p in run if p) + tuple(p for leaf in self.leaves for p in leaf.paths)

    def leaf(self, leaf_id: str) -> LeafOutputs:
        for leaf in self.leaves:
            if leaf.id == leaf_id:
                return leaf
        raise KeyError(leaf_id)
