"""Where each file of a run goes: InstructLab's names (`<kind>_<ds>.jsonl`, `node_datasets_<ds>/...`).

One place knows the names, so the writer, the recipes and the tests cannot disagree about them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class RunLayout:
    """The file names of one run folder; `stamp` is InstructLab's `<ds>` (e.g. `2026-11-25T16_10_00`)."""

    run_dir: Path
    stamp: str

    def __post_init__(self) -> None:
        if not self.stamp or any(c in self.stamp for c in "/\\\x00") or self.stamp in (".", ".."):
            raise ValueError(f"run stamp must be a plain file-name part, got {self.stamp!r}")

    def _file(self, kind: str, ext: str = "jsonl") -> Path:
        return self.run_dir / f"{kind}_{self.stamp}.{ext}"

    @property
    def test(self) -> Path:
        return self._file("test")

    @property
    def train(self) -> Path:
        return self._file("train")

    @property
    def messages(self) -> Path:
        return self._file("messages")

    @property
    def knowledge_recipe(self) -> Path:
        return self._file("knowledge_recipe", "yaml")

    @property
    def skills_recipe(self) -> Path:
        return self._file("skills_recipe", "yaml")

    @property
    def knowledge_train_msgs(self) -> Path:
        return self._file("knowledge_train_msgs")

    @property
    def skills_train_msgs(self) -> Path:
        return self._file("skills_train_msgs")

    @property
    def preprocessed_dir(self) -> Path:
        return self.run_dir / f"preprocessed_{self.stamp}"

    @property
    def generated_dir(self) -> Path:
        return self.run_dir / f"generated_{self.stamp}"

    @property
    def node_datasets_dir(self) -> Path:
        return self.run_dir / f"node_datasets_{self.stamp}"

    def preprocessed(self, leaf_name: str) -> Path:
        return self.preprocessed_dir / f"{leaf_name}.jsonl"

    def generated(self, leaf_name: str) -> Path:
        return self.generated_dir / f"{leaf_name}.jsonl"

    def node_dataset(self, leaf_name: str, suffix: str = "") -> Path:
        """`<leaf>.jsonl` for a skill leaf; suffix `_p07` / `_p10` for a knowledge leaf's two phases."""
        return self.node_datasets_dir / f"{leaf_name}{suffix}.jsonl"

    def mmlubench(self, leaf_name: str) -> Path:
        """A knowledge leaf's multiple-choice evaluation set (lm-eval's MMLU format), beside its node datasets."""
        return self.node_datasets_dir / f"mmlubench_{leaf_name}.jsonl"

    def eval_task(self, leaf_name: str) -> Path:
        """The lm-eval task file that reads `mmlubench(leaf_name)`."""
        return self.node_datasets_dir / f"{leaf_name}_task.yaml"

    @property
    def dataset_card(self) -> Path:
        """The run's Hugging Face dataset card."""
        return self.run_dir / "README.md"

    def make_dirs(self) -> None:
        for d in (self.preprocessed_dir, self.generated_dir, self.node_datasets_dir):
            d.mkdir(parents=True, exist_ok=True)
