"""What the Slurm tests need, checked once: a local cluster (scripts/slurm_up.sh) and submitit + Ray.

Away from CI a missing cluster skips them (a laptop without Slurm); with CI=true it FAILS them, so a
CI run that lost its cluster can never look green. Use `require_slurm` as an autouse fixture.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess

import pytest

HOW = "start the local cluster with `bash scripts/slurm_up.sh` (CI does)"


@functools.lru_cache(maxsize=None)
def slurm_problem(nodes: int = 2, python_modules: tuple[str, ...] = ("submitit", "ray")) -> str | None:
    """Why the Slurm tests cannot run here, or None."""
    if shutil.which("sinfo") is None:
        return f"no Slurm here (sinfo not found): {HOW}"
    try:
        r = subprocess.run(["sinfo", "-h", "-N", "-o", "%N %t %G"], capture_output=True, text=True, timeout=20)
    except subprocess.TimeoutExpired:
        return f"sinfo does not answer: {HOW}"
    up = [ln for ln in r.stdout.splitlines() if re.search(r" (idle|mix|alloc)\S* ", ln + " ")]
    if r.returncode != 0 or "gpu:" not in r.stdout or len(up) < nodes:
        return (f"no Slurm cluster with {nodes} usable GPU nodes answers "
                f"({r.stderr.strip() or r.stdout.strip()}): {HOW}")
    for mod in python_modules:
        try:
            __import__(mod)
        except ImportError:
            return f"{mod} is not installed in this environment: pip install -e '.[slurm]'"
    return None


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require_slurm(nodes: int = 2, python_modules: tuple[str, ...] = ("submitit", "ray")) -> None:
    """Skip (fail under CI=true) the calling test when the cluster or a module is missing."""
    problem = slurm_problem(nodes, python_modules)
    if problem is None:
        return
    if in_ci():
        pytest.fail(f"CI=true but the Slurm tests cannot run: {problem}", pytrace=False)
    pytest.skip(problem)
