"""Knowledge documents fetched ONCE on the submit host, before a Slurm job is queued
(sdg.launch.submit.stage_documents), and read from the shared cache by the job's nodes, which fetch none.

Real git repositories: the example taxonomy of `sdg taxonomy init` on a branch whose only change is its
knowledge leaf, re-pointed at a document repository of the test's own (a clone of the example documents,
same pinned commit) by a file:// URL, with local sources allowed (taxonomy.documents.allow). "The origin
is unreachable" is that repository moved away. The Slurm test runs one real job on the local cluster
(scripts/slurm_up.sh) and skips without it (fails under CI=true).
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from sdg.config.compose import compose_config, to_object
from sdg.errors import DocumentError
from sdg.taxonomy.documents import OFFLINE_ENV
from sdg.taxonomy.init import init_taxonomy
from tests.conftest import git

LEAF = "knowledge/science/astronomy/solar_eclipses/qna.yaml"


@pytest.fixture
def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """A taxonomy whose one changed leaf (against main) is a knowledge leaf with its documents at
    file://<tmp>/origin; private XDG dirs; SDG_DOCUMENTS_OFFLINE unset (restored after the test)."""
    for var, sub in (("XDG_DATA_HOME", "data"), ("XDG_CACHE_HOME", "xdg-cache")):
        monkeypatch.setenv(var, str(tmp_path / sub))
    for var in (OFFLINE_ENV, "HF_HUB_OFFLINE"):  # unset now, and after the test whatever the job sets:
        monkeypatch.setenv(var, "0")  # (setenv records the state to restore; delenv of an absent one would not)
        monkeypatch.delenv(var)
    init = init_taxonomy(tmp_path / "taxonomy")
    tax = init.path
    origin = tmp_path / "origin"
    subprocess.run(["git", "clone", "-q", str(init.documents_repo), str(origin)], check=True, capture_output=True)
    git(tax, "checkout", "-q", "-b", "work")
    leaf = tax / LEAF
    text = leaf.read_text()
    assert f"file://{init.documents_repo}" in text
    leaf.write_text(text.replace(f"file://{init.documents_repo}", f"file://{origin}")
                    .replace("created_by: sdg-example", "created_by: sdg-changed"))
    git(tax, "commit", "-qam", "the knowledge leaf's documents from our own repository")
    return {"tmp": tmp_path, "taxonomy": tax, "origin": origin, "cache": tmp_path / "shared" / "documents"}


def _cfg(world: dict[str, Path], *extra: str):
    return to_object(compose_config([
        "cluster=slurm", "teacher=endpoint", "teacher.endpoint_url=http://127.0.0.1:9/v1",
        f"taxonomy.path={world['taxonomy']}", "taxonomy.base=main", "taxonomy.documents.allow=[https,ssh,local]",
        f"taxonomy.documents.cache_dir={world['cache']}", "taxonomy.documents.chunk_tokens=4000",
        f"generate.output_dir={world['tmp'] / 'out'}", *extra]))


class _Queue:
    """Stands in for submitit's executor: records what would be queued (the job's callable and config)."""

    def __init__(self) -> None:
        self.submitted: list[tuple] = []

    def __call__(self, cfg, folder=None):  # make_executor(cfg, folder)
        queue = self

        class Executor:
            def submit(self, fn, cfg):
                queue.submitted.append((fn, cfg))
                return type("Job", (), {"job_id": "4242", "paths": type("P", (), {"stdout": Path("/x/4242_0_log.out")})})()

        return Executor()


def _move_away(origin: Path) -> Path:
    gone = origin.with_name(origin.name + "-moved-away")
    origin.rename(gone)
    return gone


def test_submit_stages_the_documents_and_the_job_reads_them_from_the_cache(world, monkeypatch) -> None:
    """submit(): the knowledge leaf's documents land in the shared cache before anything is queued; the
    queued job carries the flag; in the job (GenerateJob.__call__ -> node 0's plan) with the origin moved
    away, the leaf is planned with its chunks from the cache; a cache without them is a clear error, no clone."""
    from tests.slurm_support import in_ci

    try:
        import submitit
    except ImportError:  # the job's own environment object: the slurm extra (CI installs it)
        if in_ci():
            pytest.fail("CI=true but submitit is not installed (pip install -e '.[slurm]')", pytrace=False)
        pytest.skip("submitit is not installed (pip install -e '.[slurm]')")

    from sdg.launch import submit as sub
    from sdg.run import prepare

    queue = _Queue()
    monkeypatch.setattr(sub, "make_executor", queue)
    said: list[str] = []
    t0 = time.monotonic()
    sub.submit(_cfg(world, f"cluster.job_dir={world['tmp'] / 'jobs'}"), log=said.append)
    took = time.monotonic() - t0
    ((job_fn, job_cfg),) = queue.submitted
    staged = [m for m in said if m.startswith("documents of 1 knowledge leaf(s) staged in")]
    assert staged and str(world["cache"]) in staged[0], said
    assert [p.name for p in world["cache"].iterdir() if not p.name.startswith(".")], "nothing in the cache"
    assert job_fn.documents_staged is True and job_fn.offline is False  # an endpoint: no model to stage
    assert job_cfg.taxonomy.documents.cache_dir == str(world["cache"])  # absolute, as the nodes need it

    _move_away(world["origin"])
    seen: dict = {}

    def node_main(cfg, folder, unwind_on_sigterm):  # what node 0 does first: plan the run
        seen["env"] = os.environ.get(OFFLINE_ENV)
        seen["run"] = prepare(cfg, log=lambda m: None)
        return "summary"

    monkeypatch.setattr("sdg.launch.node.node_main", node_main)
    monkeypatch.setattr(submitit, "JobEnvironment", lambda: type("E", (), {"paths": type("P", (), {"folder": "/x"})})())
    assert job_fn(job_cfg) == "summary"
    assert seen["env"] == "1"
    (lp,) = seen["run"].plan.leaves
    assert lp.leaf.kind == "knowledge" and lp.leaf.chunks and "eclipse" in lp.leaf.chunks[0].text.lower()

    # The same job against a cache that lacks them (not shared, or emptied): an error naming the leaf and
    # what to do, and no clone attempt (nothing is created in that cache).
    empty = world["tmp"] / "other-cache"
    elsewhere = _cfg(world, f"taxonomy.documents.cache_dir={empty}")
    with pytest.raises(DocumentError) as err:
        job_fn(elsewhere)
    msg = str(err.value)
    assert f"knowledge leaf {LEAF}" in msg and "are not staged in" in msg and "Submit again" in msg, msg
    assert "shared file system" in msg and str(empty) in msg
    assert not empty.exists()
    print(f"submit with staging: {took:.2f} s")


def test_without_the_flag_the_same_node_would_clone_and_fail(world) -> None:
    """The contrast: the origin gone and nothing staged, a node that may fetch tries to and fails."""
    from sdg.run import select_leaves

    _move_away(world["origin"])
    with pytest.raises(DocumentError, match="cannot fetch document repo"):
        select_leaves(_cfg(world), log=lambda m: None)


@pytest.mark.parametrize("break_it", ["origin moved away", "pinned commit missing"])
def test_a_fetch_error_on_the_submit_host_names_the_leaf_and_queues_nothing(world, monkeypatch, break_it) -> None:
    from sdg.launch import submit as sub

    if break_it == "origin moved away":
        _move_away(world["origin"])
        expect = "cannot fetch document repo"
    else:
        leaf = world["taxonomy"] / LEAF
        text = leaf.read_text()
        sha = text.split('commit: "', 1)[1].split('"', 1)[0]
        leaf.write_text(text.replace(sha, "0" * 40))
        git(world["taxonomy"], "commit", "-qam", "a commit that does not exist")
        expect = "does not exist in document repo"
    queue = _Queue()
    monkeypatch.setattr(sub, "make_executor", queue)
    jobs = world["tmp"] / "jobs"
    with pytest.raises(DocumentError) as err:
        sub.submit(_cfg(world, f"cluster.job_dir={jobs}"), log=lambda m: None)
    msg = str(err.value)
    assert msg.startswith(f"knowledge leaf {LEAF}: ") and expect in msg, msg
    assert not queue.submitted and not jobs.exists()


def test_the_cli_prints_the_leaf_and_exits_1_without_queueing(world) -> None:
    """`sdg data generate cluster=slurm` with an unreachable document origin: one line naming the leaf, no
    traceback, exit 1, no job folder (sbatch is never reached, so this runs without Slurm too)."""
    import sys

    _move_away(world["origin"])
    jobs = world["tmp"] / "jobs"
    env = {**os.environ, "XDG_DATA_HOME": str(world["tmp"] / "data"), "XDG_CACHE_HOME": str(world["tmp"] / "xdg-cache")}
    r = subprocess.run([sys.executable, "-m", "sdg", "data", "generate", "cluster=slurm", "teacher=endpoint",
                        "teacher.endpoint_url=http://127.0.0.1:9/v1", f"cluster.job_dir={jobs}",
                        f"taxonomy.path={world['taxonomy']}", "taxonomy.base=main",
                        "taxonomy.documents.allow=[https,ssh,local]", f"taxonomy.documents.cache_dir={world['cache']}",
                        f"generate.output_dir={world['tmp'] / 'out'}"],
                       capture_output=True, text=True, env=env, timeout=120, cwd=Path(__file__).resolve().parent.parent)
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert f"knowledge leaf {LEAF}: cannot fetch document repo" in r.stderr and "Traceback" not in r.stderr
    assert "submitted Slurm job" not in r.stdout and not jobs.exists()


@pytest.mark.slow
def test_a_real_job_completes_with_the_document_origin_gone(world) -> None:
    """One real Slurm job (1 node, Ray, the deterministic stand-in teacher): the origin of its knowledge
    leaf's documents is moved away right after submit, and the job plans and generates from the cache."""
    from tests.slurm_support import require_slurm

    require_slurm(nodes=1)
    from sdg.launch.submit import result, submit
    from tests.standin_teacher import DeterministicStandInTeacher

    t0 = time.monotonic()
    with DeterministicStandInTeacher() as url:
        cfg = _cfg(world, f"teacher.endpoint_url={url}", "cluster.nodes=1", "cluster.gpus_per_node=0",
                   "cluster.cpus_per_task=1", "cluster.mem_gb=1", "cluster.time_min=10",
                   f"cluster.job_dir={world['tmp'] / 'jobs'}", "pipeline.sdg_scale_factor=1",
                   "pipeline.max_overgeneration=1", "generate.progress=log", "generate.progress_interval_s=5")
        said: list[str] = []
        job = submit(cfg, log=said.append)
        _move_away(world["origin"])  # before the job has planned anything
        summary = result(job)
    took = time.monotonic() - t0
    log = Path(job.paths.stdout).read_text()
    assert any("documents of 1 knowledge leaf(s) staged" in m for m in said), said
    assert summary.complete, log[-3000:]
    run = Path(summary.run_dir)
    manifest = json.loads((run / "manifest.json").read_text())
    (leaf,) = manifest["leaves"]
    assert leaf["kind"] == "knowledge" and manifest["counts"]["kept"] > 0, manifest["counts"]
    assert not world["origin"].exists()
    print(f"1-node job with staged documents: {took:.0f} s submit to summary")


def test_a_slurm_sweep_stages_the_documents_unless_the_taxonomy_is_swept(world) -> None:
    """`sdg data generate -m cluster=slurm ...`: the submit host stages the base config's documents once and the
    array's jobs get SDG_DOCUMENTS_OFFLINE=1 (sbatch passes the environment on); a swept taxonomy is left to
    the nodes, as a single submission of each combination would not know the others'."""
    from sdg.launch.sweep import stage_for_sweep

    said: list[str] = []
    overrides = ["pipeline=simple,full"]
    env = stage_for_sweep(_cfg(world), overrides, log=said.append)
    assert env == {OFFLINE_ENV: "1"}
    assert any("documents of 1 knowledge leaf(s) staged" in m for m in said), said
    assert any(world["cache"].iterdir())
    _move_away(world["origin"])  # the nodes read the cache from now on; nothing else is fetched
    swept = stage_for_sweep(_cfg(world), ["taxonomy.documents.chunk_tokens=2000,4000"], log=said.append)
    assert swept == {}
