"""Zoo health: is every loss's baseline trained well enough for its comparisons to mean something?

One rule, used by the comparison report and the claims report: a loss is weak when its best
baseline mAP (at any length) is below `fraction` of the best loss's. Differences measured on a loss
whose separately trained models are still learning say little about the method either way.
"""

from __future__ import annotations

from typing import Any

WEAK_FRACTION = 0.5


def weak_losses(best: dict[str, float], fraction: float = WEAK_FRACTION) -> dict[str, Any]:
    """`{"best": {loss: mAP}, "losses": {weak loss: mAP}, "best_loss", "best_map", "fraction"}` from
    each loss's best baseline mAP (losses without one are left out)."""
    best = {loss: float(value) for loss, value in best.items() if value is not None}
    if not best:
        return {"best": {}, "losses": {}, "best_loss": None, "best_map": None, "fraction": fraction}
    top = max(best, key=best.__getitem__)
    weak = {loss: value for loss, value in best.items() if value < fraction * best[top]}
    return {"best": best, "losses": weak, "best_loss": top, "best_map": best[top], "fraction": fraction}


def zoo_health(sections: dict[str, dict[str, Any]], fraction: float = WEAK_FRACTION) -> dict[str, Any]:
    """`weak_losses` over the comparison report's loss sections (their baseline mAP rows)."""
    best = {}
    for loss, section in sections.items():
        values = [row["baseline"] for row in section["quality"]["map"]["rows"] if row.get("baseline") is not None]
        if values:
            best[loss] = max(values)
    return weak_losses(best, fraction)
