"""The sweeps of A's and D's knobs: one paired comparison and one verdict per swept value.

A sweep (`nhl.claims.plan.Sweep`) trains a loss's nested models at each value of one
hyper-parameter (`train.beta` for A, `train.distill_weight` for D). At each value it is judged as
`compare[0] − compare[1]` (e.g. nhl-A − nhl-noA-noD), paired by seed and length and pooled over
the sweep's losses; `compare[1]`, and `compare[0]` at the reference value, come from the first
reference setting that trains the loss (its prefix or default models), so the value the pipeline
already uses costs no extra cell. Testing several values multiplies the chances of a lucky
"holds": the verdicts use Holm's adjusted p-values over the values of one sweep.
"""

from __future__ import annotations

from typing import Any

from nhl.claims.plan import Sweep
from nhl.claims.stats import holm
from nhl.claims.tables import ClaimsSpec, Tables
from nhl.claims.verdicts import NO_DATA, quality_verdict


def sweep_spec(sweep: Sweep) -> dict[str, Any]:
    """A sweep as plain JSON-ready data (what `ClaimsSpec.sweeps` holds)."""
    return {
        "name": sweep.name,
        "key": sweep.key,
        "reference": sweep.reference,
        "values": [{"value": value, "setting": setting} for value, setting in sweep.settings().items()],
        "compare": list(sweep.compare),
        "losses": list(sweep.losses),
        "reference_settings": list(sweep.reference_settings),
    }


def reference_setting(spec: ClaimsSpec, sweep: dict[str, Any], loss: str) -> str | None:
    """The first reference setting that trains `loss` with both compared variants."""
    for setting in sweep["reference_settings"]:
        if setting in spec.models and loss in spec.losses(setting):
            if all(v in spec.nested(setting) for v in sweep["compare"]):
                return setting
    return None


def family_note(sweep: dict[str, Any], alpha: float) -> str:
    n = len(sweep["values"])
    return (
        f"Family-wise: {n} values of {sweep['key']} are tested, so each verdict uses Holm's adjusted p "
        f"over the {n} (chance of any false 'holds' at most {alpha:g}); the raw p is shown beside it."
    )


def sweep_results(tables: Tables, section: str) -> list[dict[str, Any]]:
    """Per sweep: one row per value (setting, pooled and per-loss summaries, raw and Holm p, verdict)."""
    spec = tables.spec
    out = []
    for sweep in spec.sweeps:
        a_variant, b_variant = sweep["compare"]
        rows = []
        for item in sweep["values"]:
            pooled: list[float] = []
            per_loss = {}
            for loss in sweep["losses"]:
                ref = reference_setting(spec, sweep, loss)
                setting = item["setting"] or ref
                if ref is None or setting not in spec.models:
                    continue
                diffs = tables.points(tables.pairs(section, [loss], (setting, a_variant), (ref, b_variant)))
                per_loss[loss] = tables.summary(diffs)
                pooled += diffs
            rows.append({**item, "per_loss": per_loss, "pooled": tables.summary(pooled)})
        tested = [i for i, row in enumerate(rows) if row["pooled"]["n"]]
        adjusted = dict(zip(tested, holm([rows[i]["pooled"]["p_value"] for i in tested]), strict=True))
        for i, row in enumerate(rows):
            row["p_holm"] = adjusted.get(i)
            row["verdict"] = (
                quality_verdict({**row["pooled"], "p_value": adjusted[i]}, 0.0, spec.alpha)
                if i in adjusted
                else NO_DATA
            )
        out.append({**sweep, "rows": rows, "note": family_note(sweep, spec.alpha)})
    return out


def sweep_claims(sweeps: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One verdict per sweep value, in the verdict list's shape (id `sweep:<name>=<value>`)."""
    claims = []
    for sweep in sweeps:
        a_variant, b_variant = sweep["compare"]
        for row in sweep["rows"]:
            p = row["pooled"]
            evidence = f"{a_variant} − {b_variant}, pooled over {', '.join(row['per_loss']) or 'no loss'}: " + (
                f"{p['mean']:+.2f} points over {p['n']} pairs (Holm-adjusted p = {row['p_holm']:.3g}, "
                f"raw {p['p_value']:.3g})"
                if p["n"]
                else "no pairs"
            )
            claims.append(
                {
                    "id": f"sweep:{sweep['name']}={row['value']:g}",
                    "statement": f"{a_variant} beats {b_variant} at {sweep['key']} = {row['value']:g}",
                    "source": f"paper (ablation), swept ({sweep['name']})",
                    "verdict": row["verdict"],
                    "evidence": evidence,
                    "numbers": {"pooled": p, "p_holm": row["p_holm"]},
                }
            )
    return claims
