"""What to use, per loss: the variant and centres with the best mAP, and the shortest good length.

For each loss of a section (a dataset in one regime), every row of its quality table with a value
at every length is a candidate: the separately trained baselines (one model per length) and each
nested variant of each setting (the released-weighting setting excepted: it reproduces a defect).
The recommended row has the highest mean mAP over the lengths (mean over seeds at each length;
the first row in table order on a tie, as `nhl.report.chooser.best_variant`). Its length is the
code-length chooser's (`nhl.report.chooser.choose_length`): the shortest length whose mAP is
within `tolerance` (1 point) of that row's best length. The evidence quotes the numbers and the
cells the models come from. With 3 seeds, the best of many rows is an optimistic estimate of
that row's mAP: the runner-up and the paired Δ against the baselines are shown for that reason.
"""

from __future__ import annotations

from typing import Any

from nhl.claims.tables import BASELINE, ClaimsSpec, Index
from nhl.report.chooser import choose_length

NO_CENTRES = "— (no centres)"


def _curve(row: dict[str, Any], lengths: tuple[int, ...]) -> dict[int, float] | None:
    curve = {k: row["cells"][str(k)]["mean"] for k in lengths}
    return None if any(v is None for v in curve.values()) else curve


def centres_of(spec: ClaimsSpec, setting: str, loss: str, variant: str) -> str:
    """`prefix` / `independent` for a centre-based loss's nested row; a dash otherwise."""
    has_centres = spec.centres_setting is not None and loss in spec.losses(spec.centres_setting)
    if variant == BASELINE or not has_centres:
        return NO_CENTRES
    return str((spec.settings.get(setting) or {}).get("train.centers", "params.yaml's"))


def knobs_of(spec: ClaimsSpec, setting: str) -> str:
    """The swept knob of a sweep setting (`train.beta=0.5`), else empty."""
    for sweep in spec.sweeps:
        for item in sweep["values"]:
            if item["setting"] == setting:
                return f"{sweep['key']}={item['value']:g}"
    return ""


def _cells(index: Index, section: str, setting: str, loss: str, variant: str, seeds: tuple[int, ...]) -> list[str]:
    found = {
        src["cell"]
        for (d, s, l_, v, seed), src in index.sources.items()
        if d == section
        and s == setting
        and l_ == loss
        and seed in seeds
        and (v == variant or (variant == BASELINE and v.startswith(f"{BASELINE}-")))
    }
    return sorted(c for c in found if c)


def recommendations(spec: ClaimsSpec, index: Index, section: str, losses: dict[str, Any]) -> list[dict[str, Any]]:
    """One recommendation per loss of a section (`losses`: the section's `{loss: {"rows": ...}}`)."""
    out: list[dict[str, Any]] = []
    for loss, body in losses.items():
        scored = []
        for row in body["rows"]:
            if spec.faithful_setting is not None and row["setting"] == spec.faithful_setting:
                continue
            curve = _curve(row, spec.lengths)
            if curve is not None:
                scored.append((sum(curve.values()) / len(curve), row, curve))
        if not scored:
            out.append({"loss": loss, "label": None, "evidence": "no model with every length"})
            continue
        ranked = sorted(scored, key=lambda item: -item[0])  # stable: table order on ties
        score, row, curve = ranked[0]
        best, chosen = choose_length(curve, spec.tolerance)
        runner = ranked[1] if len(ranked) > 1 else None
        out.append(
            {
                "loss": loss,
                "setting": row["setting"],
                "variant": row["variant"],
                "label": row["label"],
                "centres": centres_of(spec, row["setting"], loss, row["variant"]),
                "knobs": knobs_of(spec, row["setting"]),
                "mean_map": score,
                "curve": {str(k): v for k, v in curve.items()},
                "best_length": best,
                "chosen_length": chosen,
                "runner_up": {"label": runner[1]["label"], "mean_map": runner[0]} if runner else None,
                "vs_baseline": row.get("vs_baseline"),
                "seeds": min(row["cells"][str(k)]["n"] for k in spec.lengths),
                "cells": _cells(index, section, row["setting"], loss, row["variant"], spec.seeds),
            }
        )
    return out
