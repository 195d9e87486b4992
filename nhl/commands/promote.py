"""`nhl promote`: register trained models in the MLflow Model Registry and run the promotion gate.

By default it considers, for each loss of params.yaml `models.losses`, the `registry.variant`
model (`models/<loss>/<loss>-<variant>.pt` with `metrics/<loss>/<loss>-<variant>.json`), registers it as a new
version of `registry.name` (e.g. `nhl-mnist5k-csq`) and gives it `champion` or `challenger`
(see `nhl.promotion`). `--model` considers one model file instead. The decisions and their
mAP tables go to reports/promotion.md (atomically) and to MLflow. The store is the project's
sqlite file, or the server in MLFLOW_TRACKING_URI.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "promote",
        help="register trained models and promote the best to `champion`",
        description="Register each trained model as a new version of its registered model and give it the "
        "`champion` alias if its mAP at every length is within the tolerance of the current champion's "
        "on the same split (else `challenger`). Needs a passed data validation. Exit 1 if a model "
        "could not be registered (failed validation).",
    )
    parser.add_argument(
        "--params",
        type=Path,
        default=Path("params.yaml"),
        help="params file with `data`, `models` and `registry` sections (default: %(default)s)",
    )
    parser.add_argument("--loss", action="append", help="only this loss's model (repeatable; default: models.losses)")
    parser.add_argument("--model", type=Path, help="one model file instead (models/<loss>/<model_id>.pt)")
    parser.add_argument("--name", help="registered model name for --model (default: registry.name's template)")
    parser.add_argument(
        "--metrics", type=Path, help="metrics record for --model (default: <metrics-dir>/<model file stem>.json)"
    )
    parser.add_argument("--models-dir", default="models", help="where the model files are (default: %(default)s)")
    parser.add_argument("--metrics-dir", default="metrics", help="where the metrics records are (default: %(default)s)")
    parser.add_argument(
        "--validation",
        type=Path,
        default=Path("reports/validation/result.json"),
        help="the validation gate's result (default: %(default)s)",
    )
    parser.add_argument(
        "--manifest",
        type=Path,
        default=Path("data/splits"),
        help="split manifest, to re-evaluate a champion evaluated on another split (default: %(default)s)",
    )
    parser.add_argument("--tolerance", type=float, help="override registry.tolerance (mAP)")
    parser.add_argument(
        "--report",
        type=Path,
        default=Path("reports/promotion.md"),
        help="decision report to write (default: %(default)s)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import yaml

    from nhl.layout import metrics_file
    from nhl.promotion import Candidate, candidates_from_params, promote_candidates

    params = (yaml.safe_load(args.params.read_text()) or {}) if args.params.is_file() else {}
    registry = dict(params.get("registry") or {})
    data = dict(params.get("data") or {})
    tolerance = args.tolerance if args.tolerance is not None else registry.get("tolerance", 0.01)
    if isinstance(tolerance, bool) or not isinstance(tolerance, (int, float)) or tolerance < 0:
        raise ValueError(f"registry.tolerance: expected a number >= 0, got {tolerance!r}")
    if args.model is not None:
        if not args.model.is_file():
            raise FileNotFoundError(f"model file {args.model} does not exist")
        name = args.name or _name_for(args.model, registry, data, args.params)
        metrics = args.metrics or metrics_file(args.metrics_dir, args.model.stem)
        candidates = [Candidate(name, args.model, metrics)]
    else:
        if not args.params.is_file():
            raise FileNotFoundError(f"params file {args.params} not found (pass --params, or --model and --name)")
        candidates = candidates_from_params(
            data, dict(params.get("models") or {}), registry, ".", args.loss, args.models_dir, args.metrics_dir
        )
    manifest = args.manifest if args.manifest.is_dir() else None
    decisions = promote_candidates(candidates, args.validation, float(tolerance), manifest, args.report)
    for decision in decisions:
        print(f"promote: {decision.summary()}")
    print(f"promote: report -> {args.report}")
    return 0 if all(d.registered for d in decisions) else 1


def _name_for(model: Path, registry: dict, data: dict, params: Path) -> str:
    """The registered name of one model file from `registry.name` and the file's own loss/variant."""
    from nhl.models.hasher import load_hasher
    from nhl.promotion import model_name

    if not registry.get("name"):
        raise ValueError(f"--name: required with --model when {params} has no registry.name")
    _, extra = load_hasher(model)
    loss = (extra.get("config") or {}).get("loss")
    mid = extra.get("model_id") or model.stem
    variant = mid[len(loss) + 1 :] if loss and mid.startswith(f"{loss}-") else extra.get("mode")
    return model_name(
        registry["name"], dataset=data.get("dataset"), loss=loss, variant=variant, protocol=data.get("protocol")
    )
