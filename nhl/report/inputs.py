"""Read what the evaluate stage wrote (metrics files, PR curves, training histories), the split
manifest's meta and the optional search benchmark, checking each against the schema the report uses.

A missing model is not an error (the report shows "—"); a file that exists but does not match
the schema is: one line naming the file and the missing or malformed key.
"""

from __future__ import annotations

import csv
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, overload

REQUIRED_KEYS = ("model_id", "loss", "mode", "bits", "train_seconds", "peak_memory_mb")
BITS_KEYS = ("map", "p_at_100", "p_at_r2")
PR_COLUMNS = ("bits", "radius", "precision", "recall")
BASELINE_MODE = "baseline"
BENCHMARK_COMMAND = "python bench/search.py --sweep"


@dataclass(frozen=True)
class ModelResult:
    """One metrics file (`metrics/<model_id>.json`), checked and typed."""

    model_id: str
    loss: str
    variant: str
    mode: str
    lengths: tuple[int, ...]
    bits: dict[int, dict[str, float]]
    train_seconds: float | None
    peak_memory_mb: float | None
    epochs: int | None = None
    best_epoch: int | None = None
    seconds_per_epoch: float | None = None
    mlflow_run_id: str | None = None
    topk: int | None = None
    path: str = ""

    @property
    def is_baseline(self) -> bool:
        return self.mode == BASELINE_MODE


@overload
def _number(value: Any, where: str, optional: Literal[False] = False) -> float: ...
@overload
def _number(value: Any, where: str, optional: bool) -> float | None: ...
def _number(value: Any, where: str, optional: bool = False) -> float | None:
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        expected = "a finite number or null" if optional else "a finite number"
        raise ValueError(f"{where}: expected {expected}, got {value!r}")
    return float(value)


def _load_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err.msg} at line {err.lineno})") from None


def read_metrics(path: str | os.PathLike) -> ModelResult:
    """Read and check one metrics file; a schema error names the file and the key."""
    path = Path(path)
    record = _load_json(path)
    if not isinstance(record, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(record).__name__}")
    for key in REQUIRED_KEYS:
        if key not in record:
            raise ValueError(f"{path}: missing key '{key}'")
    for key in ("model_id", "loss", "mode"):
        if not isinstance(record[key], str) or not record[key]:
            raise ValueError(f"{path}: '{key}' must be a non-empty string, got {record[key]!r}")
    if path.stem != record["model_id"]:
        raise ValueError(f"{path}: model_id {record['model_id']!r} does not match the file name")
    if not isinstance(record["bits"], dict) or not record["bits"]:
        raise ValueError(f"{path}: 'bits' must be a non-empty object keyed by code length")
    bits: dict[int, dict[str, float]] = {}
    for key, values in record["bits"].items():
        if not str(key).isdigit() or int(key) <= 0:
            raise ValueError(f"{path}: bits key {key!r} is not a code length")
        if not isinstance(values, dict):
            raise ValueError(f"{path}: bits.{key} must be an object with {', '.join(BITS_KEYS)}")
        for name in BITS_KEYS:
            if name not in values:
                raise ValueError(f"{path}: missing key 'bits.{key}.{name}'")
        bits[int(key)] = {name: _number(values[name], f"{path}: bits.{key}.{name}") for name in BITS_KEYS}
    loss = record["loss"]
    variant = record.get("variant") or record["model_id"].removeprefix(f"{loss}-")
    lengths = record.get("lengths") or sorted(bits)
    if not isinstance(lengths, list) or any(isinstance(k, bool) or not isinstance(k, int) for k in lengths):
        raise ValueError(f"{path}: 'lengths' must be a list of code lengths, got {lengths!r}")
    return ModelResult(
        model_id=record["model_id"],
        loss=loss,
        variant=str(variant),
        mode=record["mode"],
        lengths=tuple(lengths),
        bits=dict(sorted(bits.items())),
        train_seconds=_number(record["train_seconds"], f"{path}: train_seconds", optional=True),
        peak_memory_mb=_number(record["peak_memory_mb"], f"{path}: peak_memory_mb", optional=True),
        epochs=record.get("epochs"),
        best_epoch=record.get("best_epoch"),
        seconds_per_epoch=_number(record.get("seconds_per_epoch"), f"{path}: seconds_per_epoch", optional=True),
        mlflow_run_id=record.get("mlflow_run_id"),
        topk=record.get("topk"),
        path=str(path),
    )


def discover(metrics_dir: str | os.PathLike) -> tuple[list[str], list[str]]:
    """(losses, variants) of the metrics files in a directory, for a report run by hand.

    Losses keep their sorted order; variants are the baselines by length, then the nested
    variants in `nhl.variants.NESTED_VARIANTS` order, then any others by name.
    """
    from nhl.layout import metrics_files
    from nhl.variants import NESTED_VARIANTS

    found = [read_metrics(path) for path in metrics_files(metrics_dir)]
    if not found:
        raise FileNotFoundError(f"metrics directory {metrics_dir}: no metrics files (<loss>/*.json) found")
    losses = sorted({r.loss for r in found})
    baselines = sorted(
        {r.variant for r in found if r.is_baseline},
        key=lambda v: min(k for r in found if r.variant == v for k in r.bits),
    )
    known = list(NESTED_VARIANTS)
    nested = sorted(
        {r.variant for r in found if not r.is_baseline}, key=lambda v: (known.index(v) if v in known else len(known), v)
    )
    return losses, baselines + nested


def load_results(
    metrics_dir: str | os.PathLike, losses: list[str], variants: list[str]
) -> dict[str, ModelResult | None]:
    """`{model_id: result or None when its file is absent}` for every loss x variant, in order."""
    from nhl.layout import metrics_file

    results: dict[str, ModelResult | None] = {}
    for loss in losses:
        for variant in variants:
            model_id = f"{loss}-{variant}"
            path = metrics_file(metrics_dir, model_id)
            result = read_metrics(path) if path.is_file() else None
            if result is not None and (result.loss, result.variant) != (loss, variant):
                raise ValueError(
                    f"{path}: holds loss {result.loss!r} variant {result.variant!r}, expected {loss!r} {variant!r}"
                )
            results[model_id] = result
    return results


def read_pr(path: str | os.PathLike) -> dict[int, list[tuple[int, float, float]]] | None:
    """`{bits: [(radius, precision, recall), ...] by radius}` from a PR CSV, None if absent."""
    path = Path(path)
    if not path.is_file():
        return None
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        missing = [c for c in PR_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{path}: missing column '{missing[0]}' (expected {','.join(PR_COLUMNS)})")
        curves: dict[int, list[tuple[int, float, float]]] = {}
        for line, row in enumerate(reader, start=2):
            try:
                point = (int(row["radius"]), float(row["precision"]), float(row["recall"]))
                curves.setdefault(int(row["bits"]), []).append(point)
            except (TypeError, ValueError):
                raise ValueError(f"{path}: line {line}: expected numbers in {','.join(PR_COLUMNS)}") from None
    return {bits: sorted(points) for bits, points in sorted(curves.items())}


def read_history(path: str | os.PathLike) -> list[dict[str, Any]] | None:
    """Per-epoch rows of a training history file, None if absent."""
    path = Path(path)
    if not path.is_file():
        return None
    rows = _load_json(path)
    if not isinstance(rows, list) or not all(isinstance(r, dict) and "epoch" in r for r in rows):
        raise ValueError(f"{path}: expected a list of per-epoch objects, each with 'epoch'")
    return rows


def read_manifest_meta(path: str | os.PathLike | None) -> dict[str, Any] | None:
    """The split manifest's meta (`manifest.json`, or a directory holding it); None if absent."""
    if path is None:
        return None
    path = Path(path)
    if path.is_dir():
        path = path / "manifest.json"
    if not path.is_file():
        return None
    meta = _load_json(path)
    if not isinstance(meta, dict):
        raise ValueError(f"{path}: expected a JSON object")
    return meta


def read_benchmark(path: str | os.PathLike | None) -> dict[str, Any] | None:
    """The search benchmark's results (`{"rows": [...], "machine", "date"}`), None if absent."""
    if path is None or not Path(path).is_file():
        return None
    data = _load_json(Path(path))
    if not isinstance(data, dict) or not isinstance(data.get("rows"), list):
        raise ValueError(f"{path}: missing key 'rows' (a list of benchmark rows)")
    for i, row in enumerate(data["rows"]):
        for key in ("method", "bits", "queries_per_second"):
            if not isinstance(row, dict) or key not in row:
                raise ValueError(f"{path}: rows[{i}]: missing key '{key}'")
    return {**data, "path": str(path)}
