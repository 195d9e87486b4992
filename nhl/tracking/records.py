"""Turning training records and results into MLflow params and metrics (pure functions)."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any

import numpy as np

_MAX_PARAM_CHARS = 6000  # MLflow's limit on one param value


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


def _is_tensor(value: Any) -> bool:
    """A torch tensor, without importing torch (a value cannot be one unless torch is loaded)."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(value, torch.Tensor)


def flatten_params(params: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested dicts become dotted keys (`loss_params.alpha`); values become strings."""
    flat: dict[str, str] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(flatten_params(value, prefix=f"{name}."))
        else:
            flat[name] = str(value)[:_MAX_PARAM_CHARS]
    return flat


def epoch_metrics(record: Mapping[str, Any]) -> tuple[int, dict[str, float]]:
    """(step, metrics) from one training-history record.

    Numbers are kept under their own key; dicts and lists are flattened with `_`
    (`val_map: {"8": x}` -> `val_map_8`). The per-length weights `weights.mean[i]` are named
    `weight_i`. Other values (strings, None) are not metrics and are left out.
    """
    if "epoch" not in record or not _is_number(record["epoch"]):
        raise ValueError(f"epoch record: expected an integer 'epoch' field, got {record.get('epoch')!r}")
    metrics: dict[str, float] = {}

    def add(name: str, value: Any) -> None:
        if _is_number(value):
            metrics[name] = float(value)
        elif isinstance(value, Mapping):
            for key, item in value.items():
                add(f"{name}_{key}", item)
        elif isinstance(value, (list, tuple, np.ndarray)) or _is_tensor(value):
            for i, item in enumerate(np.asarray(value, dtype=float).ravel().tolist()):
                add(f"{name}_{i}", item)

    for key, value in record.items():
        if key == "epoch":
            continue
        if key == "weights" and isinstance(value, Mapping):
            add("weight", value.get("mean", []))
            add("weights", {k: v for k, v in value.items() if k != "mean"})
        else:
            add(key, value)
    return int(record["epoch"]), metrics


def result_metrics(
    bits_metrics: Mapping[str, Mapping[str, float]], extra: Mapping[str, float] | None = None
) -> dict[str, float]:
    """`{"16": {"map": x}}` -> `{"map_16": x}`, plus the `extra` numbers under their own names."""
    metrics: dict[str, float] = {}
    for bits, values in bits_metrics.items():
        for name, value in values.items():
            if not _is_number(value):
                raise ValueError(f"bits metrics: expected a number for {name!r} at {bits} bits, got {value!r}")
            metrics[f"{name}_{bits}"] = float(value)
    for name, value in (extra or {}).items():
        if value is None:
            continue
        if not _is_number(value):
            raise ValueError(f"extra metrics: expected a number for {name!r}, got {value!r}")
        metrics[name] = float(value)
    return metrics
