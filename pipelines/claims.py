"""The claims experiment: run every cell as a DVC experiment, collect the results, write the report.

One command regenerates `reports/claims.md` (with `reports/claims/claims.json`, `figures/` and the
collected `runs/`) from a clone of the repository:

    python pipelines/claims.py --params params/claims.yaml            # full plan (hours on 2 cores)
    python pipelines/claims.py --params params/claims.yaml --quick    # tier quick -> reports/claims-quick.md
    python pipelines/claims.py --params params/claims.yaml --dry-run  # plan, commands, estimated cost

Each cell (dataset x seed x setting of params/claims.yaml) is `dvc exp run --temp -n <name> -S ...`
on the default dvc.yaml/params.yaml, run one after another in the foreground; a cell whose
experiment already exists on this commit is not rerun (use --force), so an interrupted run
continues where it stopped. After a later commit (say, the report itself), `--no-run --rev
<commit>` collects the experiments made on that earlier commit again. Run it from the repository
root, with committed code (a temp experiment sees only what git tracks) and the project's venv
(`make install`).
"""

from __future__ import annotations

import argparse
import fnmatch
import os
import shlex
import sys
from pathlib import Path
from typing import Any

import yaml

PAPER_TIER = "paper"  # the tier of the paper's own protocol: its report is linked from the others
REPORT_KEYS = (
    "baseline_setting",
    "centres_setting",
    "faithful_setting",
    "confidence",
    "resamples",
    "bootstrap_seed",
    "alpha",
    "speedup_claim",
    "gain_claim_percent",
    "tolerance",
)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=Path, default=Path("params/claims.yaml"), help="claims plan (%(default)s)")
    tier = parser.add_mutually_exclusive_group()
    tier.add_argument("--tier", help="a tier of the plan file (`tiers:`), e.g. quick or paper")
    tier.add_argument("--quick", action="store_const", const="quick", dest="tier", help="same as --tier quick")
    parser.add_argument(
        "--cells",
        metavar="PATTERN",
        help="run (or collect) only cells whose id matches, e.g. 'mnist5k-s0-*'; the report "
        "still covers every cell of the plan that has been collected",
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--dry-run", action="store_true", help="print the plan, its commands and cost; run nothing")
    mode.add_argument("--no-run", action="store_true", help="start no experiment: collect those that exist, report")
    mode.add_argument("--report-only", action="store_true", help="only re-render the report from --runs-dir")
    parser.add_argument(
        "--rev",
        metavar="COMMIT",
        help="with --no-run: collect the experiments made on this commit instead of HEAD (e.g. "
        "after committing the report, whose commit has no experiments of its own)",
    )
    parser.add_argument(
        "--force",
        action="store_true",
        help="rerun every cell: dvc exp run -f (every stage reruns; a model whose fingerprint matches "
        "one already in the experiment's workspace is kept, nhl/modelset.py)",
    )
    parser.add_argument("--runs-dir", type=Path, help="collected cells (default: <out-dir>/runs)")
    fanout = parser.add_argument_group("executor (pipelines/claims_flow.py: the cells as Prefect tasks on Dask)")
    fanout.add_argument(
        "--executor",
        choices=("local", "dask"),
        default="local",
        help="local: one cell after another here (default); dask: one Prefect task per cell on a Dask cluster",
    )
    fanout.add_argument(
        "--scheduler", metavar="tcp://HOST:PORT", help="an existing Dask cluster (default: a LocalCluster)"
    )
    fanout.add_argument("--workers", type=int, default=2, help="LocalCluster worker processes (%(default)s)")
    fanout.add_argument(
        "--git-remote",
        metavar="URL",
        help="where workers push experiments (default for a LocalCluster: this repository)",
    )
    fanout.add_argument(
        "--dvc-remote",
        metavar="URL",
        help="where workers push outputs (default for a LocalCluster: this repository's cache)",
    )
    fanout.add_argument(
        "--workdir",
        metavar="PATH",
        help="each worker's clone at this commit, made from --git-remote if absent; {worker} = the worker's name "
        "(default for a LocalCluster: .dvc/tmp/claims-workers/{worker})",
    )
    parser.add_argument(
        "--out",
        type=Path,
        help="the markdown report (default: reports/claims.md, and "
        "reports/claims-<tier>.md for a tier, so tiers never overwrite "
        "each other's report or runs)",
    )
    parser.add_argument(
        "--out-dir", type=Path, help="claims.json and figures/ (default: the report's path without .md)"
    )
    args = parser.parse_args(argv)
    stem = report_stem(args.tier)
    args.out = args.out or stem.with_suffix(".md")
    args.out_dir = args.out_dir or stem
    args.runs_dir = args.runs_dir or args.out_dir / "runs"
    return args


def report_stem(tier: str | None) -> Path:
    """`reports/claims`, or `reports/claims-<tier>` for a tier: the report is `<stem>.md`, its data `<stem>/`."""
    return Path("reports") / ("claims" + (f"-{tier}" if tier else ""))


def _section(raw: dict[str, Any], name: str, path: Path) -> dict[str, Any]:
    value = raw.get(name) or {}
    if not isinstance(value, dict):
        raise ValueError(f"{path}: `{name}` must be a mapping, got {type(value).__name__}")
    return value


def load_plan(path: Path, tier: str | None) -> tuple[dict[str, Any], list, dict[str, Any], dict[str, Any]]:
    """(experiment after the tier, cells, report options, cost) of the plan file."""
    from nhl.claims.plan import merge_tier, plan_cells
    from nhl.losses.base import get_loss_class

    if not path.is_file():
        raise FileNotFoundError(f"plan file {path} not found")
    raw = yaml.safe_load(path.read_text()) or {}
    if not isinstance(raw, dict) or "experiment" not in raw:
        raise ValueError(f"{path}: no `experiment` section")
    experiment = merge_tier(raw["experiment"], raw.get("tiers"), tier)
    for loss in experiment.get("losses") or []:
        get_loss_class(loss)  # unknown loss: one line listing the known ones
    cells = plan_cells(experiment, lambda loss: bool(get_loss_class(loss).uses_centers))
    report = _section(raw, "report", path)
    unknown = sorted(set(report) - set(REPORT_KEYS))
    if unknown:
        raise ValueError(f"{path}: report: unknown key(s) {unknown}; expected some of {list(REPORT_KEYS)}")
    return experiment, cells, report, _section(raw, "cost", path)


def code_lengths(cells: list, params: Path = Path("params.yaml")) -> tuple[int, ...]:
    """The nested lengths: `train.lengths` if the plan sets it, else params.yaml's."""
    for cell in cells:
        if "train.lengths" in cell.overrides:
            return tuple(cell.overrides["train.lengths"])
    if not params.is_file():
        raise FileNotFoundError(f"{params} not found: run from the repository root")
    lengths = ((yaml.safe_load(params.read_text()) or {}).get("train") or {}).get("lengths")
    if not isinstance(lengths, list) or not lengths:
        raise ValueError(f"{params}: train.lengths: expected the list of code lengths")
    return tuple(int(k) for k in lengths)


def claims_spec(experiment: dict[str, Any], cells: list, report: dict[str, Any], lengths: tuple[int, ...]):
    from nhl.claims.plan import parse_plan
    from nhl.claims.sweeps import sweep_spec
    from nhl.claims.tables import ClaimsSpec
    from nhl.losses.base import get_loss_class

    plan = parse_plan(experiment, lambda loss: bool(get_loss_class(loss).uses_centers))

    models: dict[str, dict[str, tuple[str, ...]]] = {}
    for cell in cells:
        models.setdefault(cell.setting, {"losses": cell.losses, "variants": cell.variants})
    options = dict(report)
    defaults = {"centres_setting": ClaimsSpec.centres_setting, "faithful_setting": ClaimsSpec.faithful_setting}
    for key, default in defaults.items():  # not planned (e.g. a tier without it): no comparison
        if options.get(key, default) is not None and options.get(key, default) not in models:
            options[key] = None
    if "speedup_claim" in options:
        options["speedup_claim"] = tuple(float(x) for x in options["speedup_claim"])
    return ClaimsSpec(
        datasets=tuple(dict.fromkeys(c.section for c in cells)),
        sections=plan.sections(),
        sweeps=tuple(sweep_spec(s) for s in plan.sweeps),
        settings={name: dict(overrides) for name, overrides in plan.settings.items()},
        seeds=tuple(dict.fromkeys(c.seed for c in cells)),
        lengths=lengths,
        models=models,
        **options,
    )


def estimate_seconds(cells: list, cost: dict[str, Any]) -> float | None:
    """Models x measured seconds per model of their dataset, + a fixed cost per loss (one stage process
    each: start-up, imports, data) and per cell (None if unknown).

    A regime with its own entry in `regime_seconds_per_model` uses it instead, and adds
    `regime_seconds_per_cell` to every cell of it (stage features: each cell's temporary copy of
    the workspace computes them again)."""
    by_regime = cost.get("regime_seconds_per_model") or {}
    per_cell = cost.get("regime_seconds_per_cell") or {}
    total = 0.0
    for cell in cells:
        seconds = (by_regime.get(cell.regime) or cost.get("seconds_per_model") or {}).get(cell.dataset)
        if seconds is None:
            return None
        total += len(cell.model_ids) * float(seconds) + float(cost.get("seconds_per_cell") or 0)
        total += len(cell.losses) * float(cost.get("seconds_per_loss") or 0)
        total += float((per_cell.get(cell.regime) or {}).get(cell.dataset) or 0)
    return total


def print_plan(cells: list, prefix: str, cost: dict[str, Any]) -> None:
    from nhl.claims.dvcexp import dvc_command

    for cell in cells:
        name = cell.experiment_name(prefix)
        print(f"# {cell.cell_id}: {len(cell.model_ids)} models ({', '.join(cell.losses)} x {', '.join(cell.variants)})")
        print(f"NHL_PIPELINE_RUN={name} PYTHONPATH=. " + shlex.join(["dvc", *dvc_command(cell, name)[3:]]))
    models = sum(len(c.model_ids) for c in cells)
    seconds = estimate_seconds(cells, cost)
    estimate = (
        f"about {seconds / 3600:.1f} h on the machine the plan's `cost` was measured on"
        if seconds is not None
        else "unknown (the plan's `cost` has no seconds per model for a dataset)"
    )
    print(
        f"claims: {len(cells)} cells, {models} models; estimated cost {estimate}; models whose "
        "fingerprint is unchanged are kept"
    )
    for section in dict.fromkeys(c.section for c in cells):  # per section: where the time goes
        part = [c for c in cells if c.section == section]
        seconds = estimate_seconds(part, cost)
        hours = f"{seconds / 3600:.1f} h" if seconds is not None else "unknown"
        print(f"claims:   {section}: {len(part)} cells, {sum(len(c.model_ids) for c in part)} models, {hours}")


def run_and_collect(
    cells: list, prefix: str, runs_dir: Path, force: bool, no_run: bool, rev: str | None = None
) -> tuple[list[str], str]:
    """Run the cells that have no experiment yet, collect every finished one; (failed names, baseline).

    The experiments are those made on `rev` (a commit; HEAD when None)."""
    from nhl.claims.dvcexp import collect_cell, experiment_refs, head_commit, run_cell, untracked_code
    from nhl.claims.machine import describe_machine

    root = Path.cwd()
    if not (root / "dvc.yaml").is_file():
        raise FileNotFoundError("dvc.yaml not found: run from the repository root")
    baseline = head_commit(root, rev or "HEAD")
    machine = describe_machine()
    untracked = untracked_code(root)
    if untracked and not no_run:
        print(
            f"claims: warning: {len(untracked)} untracked file(s) under nhl/ or pipelines/ (e.g. {untracked[0]}) "
            "are not copied into the experiments; commit or `git add` them",
            file=sys.stderr,
        )
    existing = experiment_refs(root, baseline)
    failed = []
    for i, cell in enumerate(cells, start=1):
        name = cell.experiment_name(prefix)
        if force or name not in existing:
            if no_run:
                print(f"claims: [{i}/{len(cells)}] {name}: no experiment (not run: --no-run)")
                continue
            print(f"claims: [{i}/{len(cells)}] {name}: dvc exp run ({len(cell.model_ids)} models)", flush=True)
            code = run_cell(root, cell, name, force=force)
            existing = experiment_refs(root, baseline)
            if code != 0 or name not in existing:
                print(f"claims: {name}: failed (exit code {code}); its models show as missing", file=sys.stderr)
                failed.append(name)
                continue
        else:
            print(f"claims: [{i}/{len(cells)}] {name}: experiment exists ({existing[name][:10]}), collecting")
        collect_cell(root, cell, name, existing[name], baseline, runs_dir, machine)
    return failed, baseline


def run_and_collect_dask(cells: list, prefix: str, args: argparse.Namespace) -> tuple[list[str], str]:
    """The `dask` executor (pipelines/claims_flow.py, loaded beside this file)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("claims_flow", Path(__file__).with_name("claims_flow.py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["claims_flow"] = module
    spec.loader.exec_module(module)
    options = module.FanoutOptions(args.scheduler, args.workers, args.git_remote, args.dvc_remote, args.workdir)
    failed, baseline, _ = module.run_and_collect_dask(cells, prefix, args.runs_dir, args.force, options)
    return failed, baseline


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        from nhl.claims import build_claims, write_claims

        experiment, cells, report, cost = load_plan(args.params, args.tier)
        chosen = [c for c in cells if fnmatch.fnmatch(c.cell_id, args.cells)] if args.cells else cells
        if args.rev and not args.no_run:
            raise ValueError("--rev: only with --no-run (new experiments always branch from HEAD)")
        if not chosen:
            raise ValueError(f"--cells {args.cells!r}: matches no cell of the plan")
        prefix = str(experiment.get("prefix", "claims"))
        if args.dry_run:
            print_plan(chosen, prefix, cost)
            return 0
        spec = claims_spec(experiment, cells, report, code_lengths(cells))
        failed, baseline = [], None
        if args.executor == "dask" and (args.no_run or args.rev):
            raise ValueError("--executor dask: runs cells; collect with the local executor (--no-run)")
        if args.executor == "dask" and not args.report_only:
            failed, baseline = run_and_collect_dask(chosen, prefix, args)
        elif not args.report_only:  # the report covers the whole plan; --cells only limits what runs
            failed, baseline = run_and_collect(chosen, prefix, args.runs_dir, args.force, args.no_run, args.rev)
        command = f"python pipelines/claims.py --params {args.params}" + (f" --tier {args.tier}" if args.tier else "")
        stem = report_stem(args.tier)
        if (args.out, args.out_dir) != (stem.with_suffix(".md"), stem):  # a tier's report written elsewhere
            command += f" --out {args.out} --out-dir {args.out_dir}"
        settings = {
            name: (body or {}).get("overrides") or {}
            for name, body in experiment["settings"].items()
            if name in spec.models
        }
        header = {
            "command": command,
            "baseline_rev": baseline,
            "tier": args.tier,
            "settings": settings,
            "common": {k: v for k, v in cells[0].overrides.items() if k in (experiment.get("common") or {})},
            "failed": failed,
        }
        paper = report_stem(PAPER_TIER).with_suffix(".md")
        if args.tier != PAPER_TIER and paper.is_file():
            header["paper_report"] = Path(os.path.relpath(paper, args.out.parent)).as_posix()
        claims = build_claims(
            args.runs_dir, spec, [c.cell_id for c in cells], {c.cell_id: c.digest for c in cells}, header
        )
        if baseline is None:  # --report-only: the commit the collected experiments branched from
            revs = sorted({c["baseline_rev"] for c in claims.data["cells"] if c.get("baseline_rev")})
            claims.data["header"]["baseline_rev"] = ", ".join(revs) or None
        paths = write_claims(claims, args.out, args.out_dir)
    except (ValueError, OSError) as err:
        print(f"claims: error: {err}", file=sys.stderr)
        return 2
    for verdict in claims.data["verdicts"]:
        print(f"claims: {verdict['dataset']}: {verdict['verdict']:>8}: {verdict['statement']}")
    for warning in claims.data["warnings"]:
        print(f"claims: warning: {warning}", file=sys.stderr)
    models = claims.data["models"]
    print(
        f"claims: {models['found']} of {models['expected']} models -> {paths['markdown']}"
        + (f"; failed experiments: {', '.join(failed)}" if failed else "")
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
