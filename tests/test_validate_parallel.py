"""Big batches are validated by several processes: same findings, same order, as one process."""

from __future__ import annotations

from pathlib import Path

from sdg.taxonomy.validate import PARALLEL_MIN_FILES, validate_files
from tests.conftest import write_leaf


def test_parallel_and_serial_agree(tmp_path: Path) -> None:
    files = []
    for i in range(PARALLEL_MIN_FILES + 6):
        kind = ("freeform", "grounded", "foundational", "knowledge")[i % 4]
        root = {"foundational": "foundational_skills", "knowledge": "knowledge"}.get(kind, "compositional_skills")
        files.append(write_leaf(tmp_path, f"{root}/leaf{i}/qna.yaml", kind))
    files[3].write_text("version: 3\ncreated_by: x\n")  # broken
    files[4].write_text(files[8].read_text())  # a duplicate pair (both freeform skills)
    serial = validate_files(files, tmp_path, workers=1)
    parallel = validate_files(files, tmp_path, workers=2)
    assert [f.format() for f in parallel.findings] == [f.format() for f in serial.findings]
    assert [r.display for r in parallel.files] == [r.display for r in serial.files]
    assert serial.errors >= 2 and sum("duplicate leaf" in f.message for f in serial.findings) == 2
    assert all(r.node is None for r in parallel.files) and parallel.files[0].contents == serial.files[0].contents
