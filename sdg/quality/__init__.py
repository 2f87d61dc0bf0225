"""The run-wide quality stage: exact and near duplicates, seed copies and evaluation-set contamination.

A pure, streaming library (`QualityStage.offer` a row, get None to keep it or a `Drop` saying why not);
the run wires it between the pipeline's kept rows and the training files.
"""

from sdg.quality.stage import REASONS, Drop, QualityStage, row_text

__all__ = ["REASONS", "Drop", "QualityStage", "row_text"]
