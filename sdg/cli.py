"""`sdg <noun> <verb> [--flags] [key=value ...]`: compose the config, call one library function, print.

Flags carry InstructLab's names and become Hydra overrides (`--taxonomy-base main` is
`taxonomy.base=main`), so a flag and a `key=value` are one mechanism. `--cfg` prints the composed
config. An SdgError prints its message without a traceback: exit 1, usage and config errors exit 2.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from sdg import __version__
from sdg.errors import Interrupted, SdgError, UsageError


@dataclass(frozen=True)
class Flag:
    """An ilab-style flag that sets one config key."""

    names: tuple[str, ...]
    key: str
    help: str
    metavar: str = "VALUE"


@dataclass(frozen=True)
class Verb:
    noun: str
    name: str
    help: str
    run: Callable[[argparse.Namespace, object], int]
    flags: tuple[Flag, ...] = ()
    extra: Callable[[argparse.ArgumentParser], None] | None = None
    # flags whose meaning depends on other flags map to overrides here
    to_overrides: Callable[[argparse.Namespace, list[str]], list[str]] | None = None
    hidden: bool = False  # not listed in `sdg NOUN --help` (`sdg NOUN VERB --help` still works)


TAXONOMY_PATH = Flag(("--taxonomy-path",), "taxonomy.path", "taxonomy directory (default: InstructLab's)", "DIR")
TAXONOMY_BASE = Flag(("--taxonomy-base",), "taxonomy.base", "git ref to diff against; 'empty' = every leaf", "REF")
MODEL_DIR = Flag(("--model-dir",), "teacher.model_dir", "model cache (default: InstructLab's)", "DIR")
JOB_FLAGS = (Flag(("--output-dir",), "generate.output_dir", "the submit's output dir (jobs are in its slurm_jobs/)", "DIR"),
             Flag(("--job-dir",), "cluster.job_dir", "the submit's cluster.job_dir", "DIR"))
YAML_RULES = Flag(("--yaml-rules",), "taxonomy.yaml_rules", "yamllint config file replacing the default rules", "FILE")


def _error(text: str) -> None:
    """The one error printer: `error: ...` on stderr (also with --quiet)."""
    print(f"error: {text}", file=sys.stderr, flush=True)


def _out(args: argparse.Namespace, text: str = "", err: bool = False) -> None:
    if not getattr(args, "quiet", False):
        print(text, file=sys.stderr if err else sys.stdout)


def _print_findings(args: argparse.Namespace, findings) -> None:
    for f in findings:
        _out(args, f.format())


def _summary(args: argparse.Namespace, where: str, result, files: int) -> None:
    from sdg.taxonomy.findings import count

    errors, warnings = count(result.findings)
    if errors:
        bad = sum(1 for f in result.files if not f.ok)
        _out(args, f"{errors} errors and {warnings} warnings in {bad} of {files} taxonomy files", err=True)
    else:
        tail = f" ({warnings} warnings)" if warnings else ""
        _out(args, f"Taxonomy in {where} is valid :){tail}", err=True)


def run_init(args: argparse.Namespace, cfg) -> int:
    from sdg.taxonomy import api

    result = api.init(cfg)
    if result.action == "exists":
        _out(args, f"Taxonomy already in {result.path}; nothing to do.")
    elif result.action == "cloned":
        _out(args, f"Cloned {cfg.taxonomy.repository} into {result.path}.")
    else:
        _out(args, f"Created a taxonomy skeleton in {result.path} (example documents: {result.documents_repo}).")
    _out(args, f"Next: sdg taxonomy diff --taxonomy-path {result.path}")
    return 0


def run_diff(args: argparse.Namespace, cfg) -> int:
    from sdg.taxonomy import api
    from sdg.taxonomy.findings import dumps, to_json

    report = api.diff_taxonomy(cfg, documents=args.documents)
    findings = [*report.near_miss_warnings, *report.validation.findings]
    if args.format == "json":
        print(dumps({"taxonomy": str(report.diff.root), "base": report.diff.base, "fork_point": report.diff.fork_point,
                     "changed": list(report.diff.changed), "notes": list(report.diff.notes),
                     "findings": to_json(findings), "errors": report.validation.errors,
                     "warnings": report.validation.warnings + len(report.near_miss_warnings)}))
        return 0 if report.ok else 1
    for note in report.diff.notes:
        _out(args, f"note: {note}", err=True)
    for rel in report.diff.changed:
        _out(args, rel)
    if not report.diff.changed:
        _out(args, f"No changed leaves in {report.diff.root} against '{report.diff.base}'.", err=True)
    _print_findings(args, findings)
    _summary(args, str(report.diff.root), report.validation, len(report.diff.changed))
    return 0 if report.ok else 1


def run_validate(args: argparse.Namespace, cfg) -> int:
    from sdg.taxonomy import api
    from sdg.taxonomy.findings import count, dumps, to_json

    result, near = api.validate_taxonomy(cfg, args.paths, documents=args.documents)
    findings = [*near, *result.findings]
    if args.format == "json":
        errors, warnings = count(findings)
        print(dumps({"files": [f.display for f in result.files], "findings": to_json(findings),
                     "errors": errors, "warnings": warnings}))
        return 0 if result.ok else 1
    if not result.files:
        raise SdgError(f"no qna.yaml files found in {', '.join(args.paths) or cfg.taxonomy.path}; "
                       "pass files or directories of a taxonomy, or create one with `sdg taxonomy init`")
    _print_findings(args, findings)
    _summary(args, ", ".join(args.paths) or cfg.taxonomy.path, result, len(result.files))
    return 0 if result.ok else 1


def run_serve(args: argparse.Namespace, cfg) -> int:
    from sdg.teacher.serving import serve_forever

    def report(endpoints) -> None:
        for e in endpoints:
            gpus = ",".join(e.gpus) or "cpu"
            _out(args, f"teacher ready: {e.base_url} model={e.model} backend={e.backend} gpus={gpus} "
                       f"pid={e.pid or '-'} log={e.log_path or '-'}")
        keyed = endpoints and endpoints[0].api_key and not cfg.teacher.api_key
        if keyed:
            _out(args, f"api key: in {args.ready_file} (mode 0600)" if args.ready_file else
                 "api key: generated and required; it is never printed: pass --ready-file FILE to have it written "
                 "there, or set --api-key / teacher.api_key")
        _out(args, "Serving until Ctrl-C or SIGTERM.")
        sys.stdout.flush()

    ready = Path(args.ready_file) if args.ready_file else None
    return serve_forever(cfg.teacher, extra_args=args._passthrough, ready_file=ready, on_ready=report)


def run_download(args: argparse.Namespace, cfg) -> int:
    from sdg.teacher import models

    t = cfg.teacher
    repo = args.repository or t.model
    if not repo:
        raise SdgError("nothing to download: pass --repository ORG/NAME or choose a teacher (teacher=NAME)")
    ref = models.parse_model_ref(repo)
    model_dir = Path(t.model_dir)
    if ref.kind == "pkg":
        _out(args, f"{repo}: {models.resolve_model_path(repo, model_dir=model_dir, filename=args.filename)}")
        return 0
    if ref.kind == "path":
        raise SdgError(f"'{repo}' is a local path, not a Hugging Face repository (ORG/NAME); nothing to download")
    token = args.hf_token or os.environ.get("HF_TOKEN") or None
    result = models.download(ref.value, revision=args.revision or t.revision, filename=args.filename or t.filename,
                             model_dir=model_dir, token=token)
    _out(args, f"Downloaded {result.repository}@{result.revision} ({result.kind}, {len(result.files)} files) "
               f"to {result.path}")
    return run_list(args, cfg)


def run_list(args: argparse.Namespace, cfg) -> int:
    from sdg.teacher import models

    found = models.list_models(Path(cfg.teacher.model_dir))
    if not found:
        _out(args, f"No models in {cfg.teacher.model_dir}; get one with `sdg model download --repository ORG/NAME`.")
        return 0
    width = max(len(m.name) for m in found)
    for m in found:
        _out(args, f"{m.name:<{width}}  {m.size_bytes / 2**20:10.1f} MiB  {m.kind:<8}  {m.revision or '-':<12}  {m.path}")
    return 0


def _serve_extra(p: argparse.ArgumentParser) -> None:
    p.add_argument("--ready-file", metavar="FILE", help="write the endpoints (and API key) as JSON here when ready")
    _init_flags(p)


def _download_extra(p: argparse.ArgumentParser) -> None:
    p.add_argument("--repository", "-rp", metavar="ORG/NAME", help="Hugging Face repository (default: the teacher's)")
    p.add_argument("--revision", "--release", "-rl", metavar="REV", help="branch, tag or commit")
    p.add_argument("--filename", metavar="F.gguf", help="the GGUF file of a GGUF repository")
    p.add_argument("--hf-token", metavar="TOKEN", help="Hugging Face token (default: $HF_TOKEN)")
    _init_flags(p)


def run_generate(args: argparse.Namespace, cfg) -> int:
    from sdg.errors import ValidationFailed
    from sdg.run import generate

    if cfg.cluster.kind == "slurm" and not cfg.generate.dry_run:
        return run_generate_slurm(args, cfg)
    if args.wait and cfg.cluster.kind != "slurm":
        raise UsageError("--wait waits for a Slurm job: use it with cluster=slurm")
    try:
        result = generate(cfg, log=lambda m: _out(args, m, err=True))
    except ValidationFailed as exc:
        _print_findings(args, exc.findings)
        raise
    if result.dry_run is not None and cfg.generate.dry_run:
        return 0
    out = result.outputs
    _out(args, f"Wrote {result.run_dir}")
    for name in ("knowledge_train_msgs", "skills_train_msgs"):
        path = getattr(out, name, None)
        if path:
            _out(args, f"  {path}")
    for w in [*result.warnings, *getattr(out, "warnings", ())]:
        _out(args, f"warning: {w}", err=True)
    if result.empty and not cfg.generate.allow_empty:
        _error(_empty_run(str(result.run_dir)))
        return 1
    return 0 if result.complete else 1


def _empty_run(run_dir: str) -> str:
    return (f"the run kept 0 samples: every training file in {run_dir} is empty (see quality_report.json for why); "
            "pass generate.allow_empty=true to accept an empty run")


def run_generate_slurm(args: argparse.Namespace, cfg) -> int:
    """cluster=slurm: submit one job of cluster.nodes nodes; --wait streams it and returns its outcome."""
    from sdg.launch.submit import launch_generate

    launched = launch_generate(cfg, wait=args.wait, log=lambda m: _out(args, m))
    if launched.summary is None:
        return 0
    _out(args, f"Wrote {launched.summary.run_dir}")
    if launched.summary.empty and not cfg.generate.allow_empty:
        _error(_empty_run(launched.summary.run_dir))
        return 1
    return 0 if launched.complete else 1


def _job_dir(cfg) -> str:
    return cfg.cluster.job_dir


def run_jobs_status(args: argparse.Namespace, cfg) -> int:
    from sdg.launch import jobs

    if not args.job_id:
        ids = jobs.list_jobs(_job_dir(cfg))
        if not ids:
            _out(args, f"No jobs under {_job_dir(cfg)} (pass --output-dir or cluster.job_dir=DIR of the submit).")
        for job_id in ids:
            _out(args, jobs.status(_job_dir(cfg), job_id).describe().splitlines()[0])
        return 0
    st = jobs.status(_job_dir(cfg), args.job_id)
    _out(args, st.describe())
    return 0


def run_jobs_logs(args: argparse.Namespace, cfg) -> int:
    from sdg.launch import jobs

    _out(args, jobs.logs(_job_dir(cfg), args.job_id, node=args.node, lines=args.lines))
    return 0


def run_jobs_cancel(args: argparse.Namespace, cfg) -> int:
    from sdg.launch import jobs

    jobs.cancel(args.job_id)
    _out(args, f"Cancelled Slurm job {args.job_id}; its journals keep what is done: submitting the same "
               "command again resumes.")
    return 0


def run_jobs_node(args: argparse.Namespace, cfg) -> int:
    """What every task of a hand-written sbatch script runs (slurm/generate.sbatch): this node's part."""
    from sdg.launch.node import node_main

    node_main(cfg, args.job_folder)
    return 0


def _node_extra(p: argparse.ArgumentParser) -> None:
    p.add_argument("--job-folder", metavar="DIR",
                   help="the job folder every node of the job shares (default: <cluster.job_dir>/<job id>)")


def _jobs_extra(required: bool, logs: bool = False) -> Callable[[argparse.ArgumentParser], None]:
    def extra(p: argparse.ArgumentParser) -> None:
        p.add_argument("job_id", metavar="JOB_ID", nargs=None if required else "?",
                       help="Slurm job id" + ("" if required else " (default: list the jobs)"))
        if logs:
            p.add_argument("--node", type=int, default=0, metavar="N", help="node index (0 = the driver)")
            p.add_argument("--lines", type=int, default=100, metavar="N", help="last N lines")
        _init_flags(p)
    return extra


def run_mix(args: argparse.Namespace, cfg) -> int:
    from sdg.output.mix import mix_recipe

    recipe = Path(args.recipe)
    output = Path(args.output) if args.output else recipe.with_name(recipe.stem.replace("_recipe", "_train_msgs") + ".jsonl")
    n = mix_recipe(recipe, output, system_prompt=cfg.generate.system_prompt, seed=cfg.generate.seed)
    _out(args, f"Wrote {n} samples to {output}")
    return 0


def run_data_list(args: argparse.Namespace, cfg) -> int:
    from sdg.output.run_list import format_runs, list_runs

    out = Path(cfg.generate.output_dir).expanduser()
    runs = list_runs(out)
    if args.format == "json":
        print(json.dumps({"output_dir": str(out), "runs": [r.to_json() for r in runs]}, indent=2))
        return 0
    if not out.is_dir():
        _out(args, f"No runs: {out} does not exist (pass --output-dir DIR, the generate runs' output dir).")
        return 0
    _out(args, format_runs(runs, out))
    return 0


def run_data_report(args: argparse.Namespace, cfg) -> int:
    from sdg.output.html_report import write_html_report

    _out(args, str(write_html_report(Path(args.run_dir).expanduser())))
    return 0


def _data_report_extra(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", metavar="RUN_DIR", help="a generate run folder (holding quality_report.json)")
    _init_flags(p)


def _data_list_extra(p: argparse.ArgumentParser) -> None:
    p.add_argument("--format", choices=("text", "json"), default="text", help="output format")
    _init_flags(p)


def _generate_overrides(args: argparse.Namespace, user: list[str]) -> list[str]:
    """ilab's flags: --endpoint-url picks the endpoint teacher, --model names the model, --pipeline a
    shipped pipeline (simple/full) or a directory of pipeline YAMLs."""
    out: list[str] = []
    chose_teacher = any(o.split("=", 1)[0] == "teacher" for o in user)
    if args.endpoint_url:
        out += ([] if chose_teacher else ["teacher=endpoint"]) + ["teacher.backend=endpoint",
                                                                 f"teacher.endpoint_url={_quote(args.endpoint_url)}"]
    if args.model:
        key = "teacher.served_model_name" if args.endpoint_url else "teacher.model"
        out.append(f"{key}={_quote(args.model)}")
    if args.pipeline:
        out.append(f"pipeline={args.pipeline}" if args.pipeline in ("simple", "full")
                   else f"pipeline.name={_quote(str(Path(args.pipeline).expanduser().resolve()))}")
    if args.dry_run:
        out.append("generate.dry_run=true")
    return out


def run_generate_multirun(args: argparse.Namespace, overrides: list[str]) -> int:
    """`-m`: the sweep (sdg.launch.sweep.run_sweep), then one line per combination."""
    from sdg.errors import RunError
    from sdg.launch.sweep import run_sweep

    results = run_sweep(overrides, log=lambda m: _out(args, m, err=True))
    for r in results:
        where = r.run_dir or r.output_dir
        _out(args, f"{r.status}: {r.overrides} -> {where}" + (f" (Slurm job {r.job_id})" if r.job_id else ""))
        if r.error:
            _error(f"{r.overrides}: {r.error}")
    bad = [r for r in results if not r.ok]
    if bad or not results:
        raise RunError(f"{len(bad)} of {len(results)} sweep jobs did not complete")
    return 0


def _generate_extra(p: argparse.ArgumentParser) -> None:
    p.add_argument("-m", "--multirun", action="store_true", help="sweep: comma-separated values run as one job each")
    p.add_argument("--endpoint-url", metavar="URL", help="use this OpenAI-compatible server instead of starting one")
    p.add_argument("--model", metavar="NAME", help="model name at the endpoint (with --endpoint-url), else model path")
    p.add_argument("--pipeline", metavar="NAME|DIR", help="simple | full | a directory with the three pipeline YAMLs")
    p.add_argument("--dry-run", action="store_true", help="print the plan (leaves, requests, tokens, time) and stop")
    p.add_argument("--wait", action="store_true", help="cluster=slurm: stream the job's progress until it ends; "
                   "the exit status is the job's outcome")
    _init_flags(p)


def _mix_extra(p: argparse.ArgumentParser) -> None:
    p.add_argument("recipe", metavar="RECIPE", help="a knowledge_recipe_*.yaml or skills_recipe_*.yaml")
    p.add_argument("--output", metavar="FILE", help="output .jsonl (default: beside the recipe)")
    _init_flags(p)


def _validation_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--format", choices=("text", "json"), default="text", help="output format")
    p.add_argument("--documents", action="store_true",
                   help="also fetch each knowledge leaf's document repo and check its patterns (network)")
    p.add_argument("-q", "--quiet", action="store_true", help="no output; the exit code says valid (0) or not (1)")


def _init_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("-q", "--quiet", action="store_true", help="no output")


def _validate_extra(p: argparse.ArgumentParser) -> None:
    _validation_flags(p)
    p.add_argument("paths", nargs="*", metavar="PATH", help="qna.yaml files or directories (default: the taxonomy)")


VERBS: tuple[Verb, ...] = (
    Verb("taxonomy", "init", "clone a taxonomy, or create a skeleton with one example leaf of each kind", run_init,
         (Flag(("--repository",), "taxonomy.repository", "git URL to clone (default: create a skeleton)", "URL"),
          Flag(("--path",), "taxonomy.path", "where the taxonomy goes (default: InstructLab's)", "DIR")),
         _init_flags),
    Verb("taxonomy", "diff", "list qna.yaml files changed against a base ref, then validate them", run_diff,
         (TAXONOMY_PATH, TAXONOMY_BASE, YAML_RULES), _validation_flags),
    Verb("taxonomy", "validate", "validate qna.yaml files: InstructLab's schema and yamllint plus our checks",
         run_validate, (TAXONOMY_PATH, YAML_RULES), _validate_extra),
    Verb("data", "generate", "generate synthetic data for the taxonomy's new or changed leaves", run_generate,
         (TAXONOMY_PATH, TAXONOMY_BASE,
          Flag(("--sdg-scale-factor",), "pipeline.sdg_scale_factor", "samples to aim for per seed example", "N"),
          Flag(("--output-dir",), "generate.output_dir", "where dated run folders go", "DIR"),
          Flag(("--max-concurrency",), "generate.max_concurrency", "in-flight requests per teacher server", "N"),
          Flag(("--api-key",), "teacher.api_key", "API key of the endpoint", "KEY")),
         _generate_extra, _generate_overrides),
    *(Verb("jobs", name, help, run, JOB_FLAGS, _jobs_extra(required, logs)) for name, help, run, required, logs in (
        ("status", "a Slurm generate job's state, attempts and outputs (no JOB_ID: list the jobs)", run_jobs_status,
         False, False),
        ("logs", "the last lines of a Slurm generate job's node logs", run_jobs_logs, True, True),
        ("cancel", "cancel a Slurm generate job (the same submit resumes it later)", run_jobs_cancel, True, False))),
    Verb("jobs", "node", "run this node's part of a Slurm generate job (one task per node; what "
         "slurm/generate.sbatch runs through srun)", run_jobs_node, (), _node_extra, hidden=True),
    Verb("data", "mix", "mix a recipe into a training file (`{id, messages, metadata, unmask}` records)", run_mix,
         (), _mix_extra),
    Verb("data", "list", "list the generate runs in the output dir: state (complete, incomplete, interrupted, "
         "broken), taxonomy commit, teacher, pipeline, leaves, units and kept samples", run_data_list,
         (Flag(("--output-dir", "--dataset-dirs"), "generate.output_dir", "the generate runs' output dir "
               "(default: InstructLab's datasets dir)", "DIR"),), _data_list_extra),
    Verb("data", "report", "write a run folder's quality_report.html (one self-contained page: funnel, judge "
         "scores, lengths, diversity, tokens, throughput, sample rows) from its quality_report.json",
         run_data_report, (), _data_report_extra),
    Verb("model", "download", "download a teacher from Hugging Face into the model cache", run_download,
         (MODEL_DIR,), _download_extra),
    Verb("model", "list", "list the models in the model cache", run_list, (MODEL_DIR,), _init_flags),
    Verb("model", "serve", "serve the teacher: vLLM (tensor parallel), llama.cpp, or check an endpoint; "
         "arguments after -- go to vLLM", run_serve,
         (Flag(("--backend",), "teacher.backend", "vllm | llama-cpp | endpoint", "NAME"),
          Flag(("--model-path",), "teacher.model", "model: local path, ORG/NAME, or pkg:DIST", "PATH"),
          Flag(("--gpus",), "teacher.tensor_parallel_size", "GPUs per replica (vLLM tensor parallel)", "N"),
          Flag(("--replicas",), "teacher.replicas", "servers to start (default: visible GPUs / --gpus)", "N"),
          Flag(("--host",), "teacher.host", "address to bind", "HOST"),
          Flag(("--port", "-p"), "teacher.port", "port (default: a free one)", "PORT"),
          Flag(("--served-model-name",), "teacher.served_model_name", "model name clients ask for", "NAME"),
          Flag(("--api-key",), "teacher.api_key", "require this API key", "KEY"),
          Flag(("--max-ctx-size",), "teacher.context_length", "context length", "N"),
          Flag(("--num-threads",), "teacher.llama_cpp.n_threads", "llama.cpp CPU threads", "N"),
          Flag(("--endpoint-url",), "teacher.endpoint_url", "existing OpenAI-compatible URL", "URL")),
         _serve_extra),
)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # type: ignore[override]
        raise UsageError(f"{self.prog}: {message} (see `{self.prog} --help`)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="sdg", description="Synthetic data from InstructLab-style taxonomies, laptop to Slurm.",
                     epilog="Any key=value after the flags overrides the composed config (see --cfg).")
    parser.add_argument("--version", action="version", version=f"sdg {__version__}")
    nouns = parser.add_subparsers(dest="noun", metavar="NOUN", parser_class=_Parser)
    groups: dict[str, argparse._SubParsersAction] = {}
    for verb in VERBS:
        if verb.noun not in groups:
            noun_parser = nouns.add_parser(verb.noun, help=f"{verb.noun} commands")
            groups[verb.noun] = noun_parser.add_subparsers(dest="verb", metavar="VERB", parser_class=_Parser)
        # A hidden verb gets no help entry: argparse then leaves it out of the noun's list (help=SUPPRESS
        # would still list it, as "==SUPPRESS==", before Python 3.13).
        listed = {} if verb.hidden else {"help": verb.help}
        p = groups[verb.noun].add_parser(verb.name, description=verb.help, **listed)
        for flag in verb.flags:
            p.add_argument(*flag.names, dest=f"flag__{flag.key}", metavar=flag.metavar, help=f"{flag.help} [{flag.key}]")
        if verb.extra:
            verb.extra(p)
        p.add_argument("--cfg", action="store_true", help="print the composed config and exit")
        p.set_defaults(_verb=verb)
    return parser


_OVERRIDE_KEY = re.compile(r"^[+~]{0,2}[A-Za-z_][\w.\-/@]*$")


def _is_override(token: str) -> bool:
    """`key=value`, `+key=value`, `group=option`, `hydra/launcher=name` (not a path that exists)."""
    head = token.split("=", 1)[0]
    return "=" in token and bool(_OVERRIDE_KEY.match(head)) and not Path(token).exists()


def parse(argv: Sequence[str]) -> tuple[argparse.Namespace, list[str]]:
    """Namespace plus the Hydra overrides: flags first, then `key=value` tokens (later ones win)."""
    parser = build_parser()
    passthrough: list[str] = []
    if "--" in argv:
        cut = list(argv).index("--")
        argv, passthrough = list(argv[:cut]), list(argv[cut + 1:])
    overrides = [a for a in argv if _is_override(a)]
    rest = [a for a in argv if not _is_override(a)]
    args = parser.parse_args(rest)
    args._passthrough = passthrough
    if not getattr(args, "_verb", None):
        if args.noun:
            parser.parse_args([args.noun, "--help"])
        parser.print_help()
        raise SystemExit(2)
    flag_overrides: list[str] = []
    for flag in args._verb.flags:
        value = getattr(args, f"flag__{flag.key}")
        if value is not None:
            flag_overrides.append(f"{flag.key}={_quote(value)}")
    if args._verb.to_overrides is not None:
        flag_overrides += args._verb.to_overrides(args, overrides)
    if passthrough and args._verb.run is not run_serve:
        raise UsageError(f"arguments after -- are only for `sdg model serve`: {' '.join(passthrough)}")
    all_overrides = flag_overrides + overrides
    return args, all_overrides


def _quote(value: str) -> str:
    """A flag value as a Hydra override value: quoted so paths and URLs with ':' or '=' stay literal."""
    escaped = value.replace("\\", "\\\\").replace("'", "\\'")
    return f"'{escaped}'"


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args, overrides = parse(argv)
        from omegaconf import OmegaConf

        from sdg.config.compose import compose_config, to_object

        if getattr(args, "multirun", False):
            return run_generate_multirun(args, overrides)
        cfg = compose_config(overrides)
        if args.cfg:
            print(OmegaConf.to_yaml(cfg), end="")
            return 0
        return args._verb.run(args, to_object(cfg))
    except SdgError as exc:
        _error(str(exc))
        return exc.exit_code
    except Interrupted as exc:
        print(f"stopped by signal {exc.signum}: finished work is kept; the same command resumes", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
