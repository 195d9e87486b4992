"""The comparison tables: per base loss, the fixed-length baselines against each nested variant.

Everything here is plain data (JSON-ready dicts and lists) computed from `ModelResult`s; the
markdown, the figures and `comparison.json` are all rendered from it. A missing model gives
`None` wherever its numbers would be, and every number that needs it (a difference, a sum, a
speed-up) is `None` too, rather than a figure computed from part of the inputs.
"""

from __future__ import annotations

from typing import Any

from nhl.report.inputs import ModelResult

METRIC_NAMES = ("map", "p_at_100", "p_at_r2")
BASELINE = "baseline"


def metric_labels(topk: int | None) -> dict[str, str]:
    """Column titles of the three retrieval metrics; mAP's depth comes from the metrics files."""
    return {"map": "mAP@ALL" if topk is None else f"mAP@{topk}", "p_at_100": "P@100", "p_at_r2": "P@r<=2"}


def points(value: float | None, reference: float | None) -> float | None:
    """`value - reference` in points (1 point = 0.01), None when either is missing."""
    return None if value is None or reference is None else 100.0 * (value - reference)


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _at(result: ModelResult | None, bits: int, metric: str) -> float | None:
    if result is None or bits not in result.bits:
        return None
    return result.bits[bits][metric]


def split_variants(
    variants: list[str], loss: str, results: dict[str, ModelResult | None]
) -> tuple[dict[int, str], list[str]]:
    """({bits: baseline variant}, [nested variants]) among the configured `variants`.

    A baseline is told by its file's mode, or, when its file is missing, by the name
    `baseline-<k>` (nested variant names never take that form).
    """
    baselines: dict[int, str] = {}
    nested: list[str] = []
    for variant in variants:
        result = results.get(f"{loss}-{variant}")
        if result is not None:
            if result.is_baseline:
                baselines[min(result.bits)] = variant
            else:
                nested.append(variant)
        elif variant.startswith(f"{BASELINE}-") and variant[len(BASELINE) + 1 :].isdigit():
            baselines[int(variant[len(BASELINE) + 1 :])] = variant
        else:
            nested.append(variant)
    return dict(sorted(baselines.items())), nested


def loss_lengths(
    baselines: dict[int, str], nested: list[str], loss: str, results: dict[str, ModelResult | None]
) -> list[int]:
    """Every code length a loss's models cover (baselines' lengths and nested models' lengths)."""
    lengths = set(baselines)
    for variant in nested:
        result = results.get(f"{loss}-{variant}")
        if result is not None:
            lengths.update(result.lengths)
    return sorted(lengths)


def model_row(model_id: str, variant: str, result: ModelResult | None) -> dict[str, Any]:
    """One model's cost and provenance (the numbers are None when its metrics file is missing)."""
    if result is None:
        return {"model_id": model_id, "variant": variant, "present": False}
    return {
        "model_id": model_id,
        "variant": variant,
        "present": True,
        "mode": result.mode,
        "lengths": list(result.lengths),
        "train_seconds": result.train_seconds,
        "peak_memory_mb": result.peak_memory_mb,
        "epochs": result.epochs,
        "best_epoch": result.best_epoch,
        "seconds_per_epoch": result.seconds_per_epoch,
        "mlflow_run_id": result.mlflow_run_id,
        "metrics_file": result.path,
    }


def quality_table(
    loss: str,
    lengths: list[int],
    baselines: dict[int, str],
    nested: list[str],
    results: dict[str, ModelResult | None],
    metric: str,
) -> dict[str, Any]:
    """Rows per length: the baseline of that length, each nested variant and its difference.

    `mean_diff_points[v]` averages the differences over the lengths where both exist.
    """
    rows = []
    diffs: dict[str, list[float]] = {v: [] for v in nested}
    for bits in lengths:
        base = _at(results.get(f"{loss}-{baselines[bits]}"), bits, metric) if bits in baselines else None
        row: dict[str, Any] = {"bits": bits, BASELINE: base, "variants": {}}
        for variant in nested:
            value = _at(results.get(f"{loss}-{variant}"), bits, metric)
            diff = points(value, base)
            row["variants"][variant] = {"value": value, "diff_points": diff}
            if diff is not None:
                diffs[variant].append(diff)
        rows.append(row)
    return {"rows": rows, "mean_diff_points": {v: _mean(d) for v, d in diffs.items()}}


def cost_table(
    loss: str, baselines: dict[int, str], nested: list[str], results: dict[str, ModelResult | None]
) -> dict[str, Any]:
    """Training seconds and peak memory: each baseline, their sum, each nested model and its speed-up.

    A nested model's speed-up is the sum of the baselines of its own lengths divided by its
    seconds; it is None unless every one of those baselines is present with a time.
    """
    base_rows = {bits: model_row(f"{loss}-{v}", v, results.get(f"{loss}-{v}")) for bits, v in baselines.items()}
    times = [r["train_seconds"] for r in base_rows.values() if r["present"] and r["train_seconds"] is not None]
    memory = [r["peak_memory_mb"] for r in base_rows.values() if r["present"] and r["peak_memory_mb"] is not None]
    summary = {
        "models": [r["model_id"] for r in base_rows.values()],
        "expected": len(base_rows),
        "present": len(times),
        "train_seconds_sum": sum(times) if times else None,
        "complete": bool(base_rows) and len(times) == len(base_rows),
        "peak_memory_mb_max": max(memory) if memory else None,
    }
    variants = {}
    for variant in nested:
        row = model_row(f"{loss}-{variant}", variant, results.get(f"{loss}-{variant}"))
        row["speedup"], row["speedup_note"] = None, None
        if row["present"]:
            needed = [base_rows.get(k) for k in row["lengths"]]
            missing = [
                k
                for k, r in zip(row["lengths"], needed, strict=True)
                if r is None or not r["present"] or r["train_seconds"] is None
            ]
            if missing:
                row["speedup_note"] = "no baseline time at " + ", ".join(str(k) for k in missing) + " bits"
            elif not row["train_seconds"]:
                row["speedup_note"] = "no training time recorded"
            else:
                row["baseline_seconds"] = sum(r["train_seconds"] for r in needed if r is not None)
                row["speedup"] = row["baseline_seconds"] / row["train_seconds"]
        variants[variant] = row
    return {"baselines": list(base_rows.values()), "baseline_total": summary, "variants": variants}


def loss_section(loss: str, variants: list[str], results: dict[str, ModelResult | None]) -> dict[str, Any]:
    """Everything the report says about one base loss, except the chooser."""
    baselines, nested = split_variants(variants, loss, results)
    lengths = loss_lengths(baselines, nested, loss, results)
    return {
        "lengths": lengths,
        "baselines": {str(k): v for k, v in baselines.items()},
        "variants": nested,
        "missing": [f"{loss}-{v}" for v in variants if results.get(f"{loss}-{v}") is None],
        "quality": {m: quality_table(loss, lengths, baselines, nested, results, m) for m in METRIC_NAMES},
        "cost": cost_table(loss, baselines, nested, results),
    }


def map_curves(section: dict[str, Any]) -> dict[str, dict[int, float]]:
    """`{"baseline" or variant: {bits: mAP}}` of one loss, the points that exist only."""
    curves: dict[str, dict[int, float]] = {BASELINE: {}}
    for row in section["quality"]["map"]["rows"]:
        if row[BASELINE] is not None:
            curves[BASELINE][row["bits"]] = row[BASELINE]
        for variant, cell in row["variants"].items():
            if cell["value"] is not None:
                curves.setdefault(variant, {})[row["bits"]] = cell["value"]
    return {name: curve for name, curve in curves.items() if curve}


def map_vs_bits_csv(losses: dict[str, dict[str, Any]]) -> str:
    """`loss,variant,bits,map` rows (baselines as one `baseline` curve) for `dvc plots`."""
    lines = ["loss,variant,bits,map"]
    for loss, section in losses.items():
        for name, curve in map_curves(section).items():
            lines += [f"{loss},{name},{bits},{value:.6f}" for bits, value in sorted(curve.items())]
    return "\n".join(lines) + "\n"
