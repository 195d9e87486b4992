"""The collected runs: one folder per cell, holding what its DVC experiment produced.

```
reports/claims/runs/<dataset>-s<seed>-<setting>/
    experiment.json        cell, DVC experiment name and commit, baseline commit, overrides
    dvc.lock               the experiment's lock file (md5 of every model and metrics file)
    params.yaml            the experiment's parameters
    metrics/<model_id>.json  one per model, the schema of the evaluate stage (nhl.evaluation)
```
The metrics files are the experiment's own `metrics/<model_id>.json` when its commit holds them,
else rebuilt from its `reports/comparison.json` (which the report stage writes from those files;
`records_from_comparison`). Each carries `source`: the experiment, its commit and the md5 that
the experiment's dvc.lock records for the model file and the original metrics file.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from nhl.report.inputs import ModelResult, read_metrics
from nhl.report.tables import METRIC_NAMES

META_NAME = "experiment.json"
METRICS_DIR = "metrics"


def records_from_comparison(data: dict[str, Any]) -> list[dict[str, Any]]:
    """Metrics records (the evaluate stage's schema) of every present model in a `comparison.json`.

    A baseline's numbers sit in the `baseline` column of its length's rows, a nested model's in
    its variant's column at each of its lengths; costs and the MLflow run id in `models`.
    """
    try:
        losses, models, topk = data["losses"], data["models"], data["header"].get("topk")
    except (KeyError, TypeError, AttributeError):
        raise ValueError("comparison.json: expected keys 'losses', 'models' and 'header'") from None
    records = []
    for loss, section in losses.items():
        rows = {metric: {row["bits"]: row for row in section["quality"][metric]["rows"]} for metric in METRIC_NAMES}
        owned: list[tuple[str, list[int], bool]] = [(v, [int(k)], True) for k, v in section["baselines"].items()]
        owned += [(v, [], False) for v in section["variants"]]
        for variant, lengths, is_baseline in owned:
            row = models.get(f"{loss}-{variant}")
            if row is None or not row.get("present"):
                continue
            lengths = lengths or list(row["lengths"])
            bits = {}
            for k in lengths:
                cells = {m: rows[m].get(k) for m in METRIC_NAMES}
                values = {
                    m: (cell["baseline"] if is_baseline else cell["variants"][variant]["value"])
                    if cell is not None
                    else None
                    for m, cell in cells.items()
                }
                if any(v is None for v in values.values()):
                    raise ValueError(f"comparison.json: {loss}-{variant} has no {k}-bit metrics")
                bits[str(k)] = values
            records.append(
                {
                    "model_id": f"{loss}-{variant}",
                    "loss": loss,
                    "variant": variant,
                    "mode": row["mode"],
                    "lengths": list(row["lengths"]),
                    "topk": topk,
                    "bits": bits,
                    "train_seconds": row["train_seconds"],
                    "peak_memory_mb": row["peak_memory_mb"],
                    "epochs": row.get("epochs"),
                    "best_epoch": row.get("best_epoch"),
                    "seconds_per_epoch": row.get("seconds_per_epoch"),
                    "mlflow_run_id": row.get("mlflow_run_id"),
                }
            )
    return records


def locked_md5(lock_text: str) -> dict[str, str]:
    """`{path: md5}` of every stage output recorded in a dvc.lock."""
    lock = yaml.safe_load(lock_text) or {}
    found = {}
    for stage in (lock.get("stages") or {}).values():
        for out in stage.get("outs") or []:
            if isinstance(out, dict) and "path" in out and "md5" in out:
                found[str(out["path"])] = str(out["md5"])
    return found


def write_cell(
    runs_dir: str | os.PathLike, meta: dict[str, Any], records: list[dict[str, Any]], files: dict[str, str]
) -> Path:
    """Write one cell's folder whole (built aside, then swapped in): meta, metrics files, `files`."""
    from nhl import atomic

    folder = Path(runs_dir) / meta["cell_id"]
    with atomic.directory(folder) as tmp:
        (tmp / METRICS_DIR).mkdir()
        for record in records:
            (tmp / METRICS_DIR / f"{record['model_id']}.json").write_text(json.dumps(record, indent=2) + "\n")
        for name, text in files.items():
            (tmp / name).write_text(text)
        (tmp / META_NAME).write_text(json.dumps(meta, indent=2) + "\n")
    return folder


@dataclass(frozen=True)
class CollectedCell:
    """One collected cell: its meta (`experiment.json`) and its models by model id."""

    meta: dict[str, Any]
    results: dict[str, ModelResult]
    sources: dict[str, dict[str, Any]]
    path: str


REQUIRED_META = ("cell_id", "dataset", "seed", "setting", "experiment", "rev")


def read_cell(folder: str | os.PathLike) -> CollectedCell:
    """Read and check one cell folder (every metrics file through the report's schema check)."""
    folder = Path(folder)
    meta_path = folder / META_NAME
    if not meta_path.is_file():
        raise FileNotFoundError(f"{folder}: no {META_NAME}; not a collected claims cell")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{meta_path}: not valid JSON ({err.msg} at line {err.lineno})") from None
    for key in REQUIRED_META:
        if not isinstance(meta, dict) or key not in meta:
            raise ValueError(f"{meta_path}: missing key '{key}'")
    results, sources = {}, {}
    for path in sorted((folder / METRICS_DIR).glob("*.json")):
        result = read_metrics(path)
        results[result.model_id] = result
        sources[result.model_id] = json.loads(path.read_text(encoding="utf-8")).get("source") or {}
    return CollectedCell(meta, results, sources, str(folder))


def load_cells(
    runs_dir: str | os.PathLike, cell_ids: list[str] | None = None, digests: dict[str, str] | None = None
) -> tuple[list[CollectedCell], list[str]]:
    """(cells found, notes) under `runs_dir`: the listed cells (all when None), in that order.

    With `digests` (`{cell_id: plan digest}`), a folder collected under a different plan (other
    overrides) is left out with a note, so a report never mixes two configurations.
    """
    runs_dir = Path(runs_dir)
    ids = (
        cell_ids
        if cell_ids is not None
        else sorted(p.name for p in runs_dir.iterdir() if (p / META_NAME).is_file())
        if runs_dir.is_dir()
        else []
    )
    cells, notes = [], []
    for cell_id in ids:
        folder = runs_dir / cell_id
        if not (folder / META_NAME).is_file():
            notes.append(f"{cell_id}: not collected")
            continue
        cell = read_cell(folder)
        wanted = (digests or {}).get(cell_id)
        if wanted is not None and cell.meta.get("digest") != wanted:
            notes.append(
                f"{cell_id}: collected from {cell.meta.get('experiment')} under other overrides "
                f"(digest {cell.meta.get('digest')}, plan {wanted}); left out"
            )
            continue
        cells.append(cell)
    return cells, notes
