"""Promotion gate: register the pipeline's models in the MLflow Model Registry, promote or not.

For each loss of `models.losses`, the `registry.variant` model (models/<loss>/<loss>-<variant>.pt,
evaluated in metrics/<loss>/<loss>-<variant>.json) becomes a new version of `registry.name`
(`nhl-{dataset}-{loss}`) if the validation gate passed on its data, and gets `champion` only if
its mAP at every length is within `registry.tolerance` of the champion's on the same split
(`nhl.promotion`). Writes reports/promotion.md atomically; exit 1 if a model was not registered,
2 on bad input. Not a DVC stage (it changes the registry, which is not a file DVC can cache):
the Prefect `retrain` flow runs it last (`promote_project`), people run it or `nhl promote`.

    python pipelines/promote.py --params params.yaml
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from _params import read_section  # pipelines/ is sys.path[0] when a stage script runs (and in the flow)

from nhl.orchestration import stage_error

REPORT = Path("reports/promotion.md")
VALIDATION = Path("reports/validation/result.json")
MANIFEST = Path("data/splits")


def promote_project(
    project: str | Path,
    params: str | Path | None = None,
    losses: list[str] | None = None,
    report: str | Path | None = None,
) -> list:
    """Run the gate for a project directory (paths relative to it); returns the decisions
    (`nhl.promotion.PromotionDecision`, `.summary()` / `.to_dict()` for logs and flow results)."""
    from nhl.promotion import candidates_from_params, promote_candidates

    root = Path(project).resolve()
    params = Path(params) if params is not None else root / "params.yaml"
    registry = read_section(params, "registry")
    data, models = read_section(params, "data"), read_section(params, "models")
    tolerance = registry.get("tolerance", 0.01)
    if isinstance(tolerance, bool) or not isinstance(tolerance, (int, float)) or tolerance < 0:
        raise ValueError(f"registry.tolerance: expected a number >= 0, got {tolerance!r}")
    candidates = candidates_from_params(data, models, registry, root, losses)
    manifest = root / MANIFEST
    return promote_candidates(
        candidates,
        root / VALIDATION,
        float(tolerance),
        manifest if manifest.is_dir() else None,
        Path(report) if report is not None else root / REPORT,
        project_root=root,
    )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--params",
        type=Path,
        default=None,
        help="params file (`data`, `models`, `registry`; default: <project>/params.yaml)",
    )
    parser.add_argument("--project", type=Path, default=Path("."), help="project directory (default: %(default)s)")
    parser.add_argument("--loss", action="append", help="only this loss's model (repeatable)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        decisions = promote_project(args.project, args.params, args.loss)
    except (ValueError, FileNotFoundError) as err:
        print(stage_error("promote", err), file=sys.stderr)
        return 2
    for decision in decisions:
        print(f"promote: {decision.summary()}")
    print(f"promote: report -> {args.project / REPORT}")
    return 0 if all(d.registered for d in decisions) else 1


if __name__ == "__main__":
    sys.exit(main())
