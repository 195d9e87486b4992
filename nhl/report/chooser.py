"""The code-length chooser: the shortest code whose mAP is within a tolerance of the best length.

A nested model scores every length at once, so a user can read off the cheapest length that
costs at most `tolerance` mAP (0.01 = one point) instead of training one model per length. Each
length comes with its storage (bits / 8 bytes per item, so bits / 8 MB per million items) and,
when the search benchmark has run, its measured search speed.
"""

from __future__ import annotations

from typing import Any

from nhl.report.inputs import BENCHMARK_COMMAND
from nhl.report.tables import BASELINE, map_curves

_EPS = 1e-12  # a length exactly at the tolerance counts as within it


def storage_mb_per_million(bits: int) -> float:
    """Megabytes (10^6 bytes) that one million `bits`-bit codes take: bits / 8 bytes each."""
    return bits / 8  # bits / 8 bytes per item x 10^6 items / 10^6 bytes per MB


def choose_length(curve: dict[int, float], tolerance: float) -> tuple[int, int]:
    """(best length, chosen length) of a `{bits: mAP}` curve.

    The best length has the highest mAP (the shortest one on a tie); the chosen length is the
    shortest whose mAP is at least the best minus `tolerance`.
    """
    if not curve:
        raise ValueError("chooser: the mAP curve is empty")
    if tolerance < 0:
        raise ValueError(f"chooser: tolerance must be >= 0, got {tolerance}")
    best = max(sorted(curve), key=lambda k: curve[k])  # max keeps the first (shortest) of ties
    chosen = min(k for k, value in curve.items() if value >= curve[best] - tolerance - _EPS)
    return best, chosen


def search_at(benchmark: dict[str, Any] | None, bits: int) -> dict[str, Any] | None:
    """The benchmark row for exact (flat) search over `bits`-bit codes, else any row at `bits`."""
    if benchmark is None:
        return None
    rows = [r for r in benchmark["rows"] if r.get("bits") == bits]
    rows.sort(key=lambda r: not str(r["method"]).startswith("flat"))
    if not rows:
        return None
    row = rows[0]
    return {key: row.get(key) for key in ("method", "queries_per_second", "recall_at_100", "index_mb")}


def best_variant(section: dict[str, Any]) -> str | None:
    """The nested variant with the highest mean mAP over its lengths (first in order on a tie)."""
    curves = map_curves(section)
    scored = [(sum(curves[v].values()) / len(curves[v]), v) for v in section["variants"] if v in curves]
    return max(scored, key=lambda item: item[0])[1] if scored else None


def curve_choice(
    curve: dict[int, float], lengths: list[int], tolerance: float, benchmark: dict[str, Any] | None
) -> dict[str, Any]:
    """The chooser's numbers for one model (or the baselines' curve): per length and the choice."""
    best, chosen = choose_length(curve, tolerance)
    rows = [
        {
            "bits": bits,
            "map": value,
            "gap_points": 100.0 * (curve[best] - value),
            "within_tolerance": value >= curve[best] - tolerance - _EPS,
            "storage_mb_per_million": storage_mb_per_million(bits),
            "search": search_at(benchmark, bits),
        }
        for bits, value in sorted(curve.items())
    ]
    return {
        "best_bits": best,
        "best_map": curve[best],
        "chosen_bits": chosen,
        "chosen_map": curve[chosen],
        "storage_mb_per_million": storage_mb_per_million(chosen),
        "search": search_at(benchmark, chosen),
        "lengths_missing": [k for k in lengths if k not in curve],
        "rows": rows,
    }


def chooser(losses: dict[str, dict[str, Any]], tolerance: float, benchmark: dict[str, Any] | None) -> dict[str, Any]:
    """The chooser for every loss: each nested variant and the baselines' curve, and the best variant."""
    out: dict[str, Any] = {
        "tolerance": tolerance,
        "benchmark": (
            {
                "measured": True,
                "path": benchmark.get("path"),
                "machine": benchmark.get("machine"),
                "date": benchmark.get("date"),
            }
            if benchmark is not None
            else {"measured": False, "command": BENCHMARK_COMMAND}
        ),
        "losses": {},
    }
    for loss, section in losses.items():
        curves = map_curves(section)
        choices = {
            name: curve_choice(curves[name], section["lengths"], tolerance, benchmark)
            for name in [*section["variants"], BASELINE]
            if name in curves
        }
        out["losses"][loss] = {"best_variant": best_variant(section), "curves": choices}
    return out
