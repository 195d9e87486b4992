"""Plain-language verdicts: does each claim hold on this data (holds / partly / does not)?

Rules (the same for every quality claim, differences in the claim's own unit):
- holds: the mean difference reaches the claimed size, its bootstrap interval lies above 0 and
  the sign test rejects "no difference" at `alpha`;
- does not: the mean difference is 0 or below (no gain at all on this data);
- partly: anything between (a gain smaller than claimed, or one the seeds do not support).
The speed claim holds when the mean speed-up reaches the low end of the claimed range, does not
when one nested model is no faster than the baselines together (<= 1x), and partly otherwise.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

HOLDS, PARTLY, DOES_NOT, NO_DATA = "holds", "partly", "does not", "no data"
_EPS = 1e-12


def quality_verdict(summary: dict[str, Any], size: float = 0.0, alpha: float = 0.05) -> str:
    """Verdict of "the difference is positive (and at least `size`)" from a paired summary."""
    mean = summary.get("mean")
    if not summary.get("n") or mean is None:
        return NO_DATA
    if mean <= 0:
        return DOES_NOT
    low = summary.get("ci_low")
    if mean >= size - _EPS and low is not None and low > 0 and summary.get("p_value", 1.0) < alpha:
        return HOLDS
    return PARTLY


def speed_verdict(ratios: Sequence[float], claimed_low: float) -> str:
    """Verdict of "one nested model trains `claimed_low`x or more faster than all baselines"."""
    if not ratios:
        return NO_DATA
    mean = sum(ratios) / len(ratios)
    if mean >= claimed_low:
        return HOLDS
    return DOES_NOT if mean <= 1.0 else PARTLY


def combine(verdicts: Iterable[str]) -> str:
    """A claim made for every part (loss, length): holds if every part holds, does not if none
    gains at all, partly otherwise; parts with no data are ignored."""
    known = [v for v in verdicts if v != NO_DATA]
    if not known:
        return NO_DATA
    if all(v == HOLDS for v in known):
        return HOLDS
    return DOES_NOT if all(v == DOES_NOT for v in known) else PARTLY


def describe(summary: dict[str, Any], unit: str = "points") -> str:
    """`+1.23 points (95% CI +0.40 to +2.10; sign test p = 0.012, 11 better / 3 worse of 15 pairs)`."""
    if not summary.get("n") or summary.get("mean") is None:
        return "no pairs"
    text = f"{summary['mean']:+.2f} {unit}"
    if summary.get("ci_low") is not None:
        text += f" (95% CI {summary['ci_low']:+.2f} to {summary['ci_high']:+.2f}; "
    else:
        text += " ("
    text += (
        f"sign test p = {summary['p_value']:.3g}, {summary['wins']} better / {summary['losses']} worse"
        f" of {summary['n']} pairs)"
    )
    return text


def _claim(cid: str, statement: str, source: str, verdict: str, evidence: str, **numbers: Any) -> dict[str, Any]:
    return {
        "id": cid,
        "statement": statement,
        "source": source,
        "verdict": verdict,
        "evidence": evidence,
        "numbers": numbers,
    }


def dataset_claims(section: dict[str, Any], speedups: list[float], spec: Any) -> list[dict[str, Any]]:
    """The claims judged on one dataset's tables (`section`: quality, pooled, comparisons)."""
    alpha = spec.alpha
    low, high = spec.speedup_claim
    claims = []
    full = next(
        (r for r in section["pooled"] if r["setting"] == spec.baseline_setting and r["variant"] == "nhl-full"), None
    )

    # 1. training time
    if speedups:
        mean = sum(speedups) / len(speedups)
        evidence = (
            f"one nhl-full model took {mean:.2f}x less training time than the {len(spec.lengths)} "
            f"fixed-length models together (range {min(speedups):.2f}-{max(speedups):.2f}x over "
            f"{len(speedups)} loss x seed pairs); the paper reports {low:g}-{high:g}x"
        )
    else:
        mean, evidence = None, "no loss and seed with every baseline and nhl-full trained"
    claims.append(
        _claim(
            "time",
            f"One NHL model trains {low:g}-{high:g}x faster than training every length separately",
            "paper (abstract)",
            speed_verdict(speedups, low),
            evidence,
            mean_speedup=mean,
            n=len(speedups),
        )
    )

    # 2. headline quality gain
    if full is not None:
        pct, pts = full["percent"], full["points"]
        verdict = quality_verdict(pct, spec.gain_claim_percent, alpha)
        evidence = (
            f"nhl-full vs the separately trained model of the same length and seed: "
            f"{describe(pct, '%')}, i.e. {pts['mean']:+.2f} points of mAP"
            if pts["mean"] is not None
            else "no nhl-full model with a baseline to compare"
        )
        claims.append(
            _claim(
                "gain",
                f"NHL improves retrieval by about {spec.gain_claim_percent:g}% on average "
                "over separately trained models",
                "paper (abstract)",
                verdict,
                evidence,
                percent=pct,
                points=pts,
            )
        )

        # 2b. the same claim for nested models with prefix-consistent centres (nhl's pipeline default)
        prefix = (
            next(
                (r for r in section["pooled"] if r["setting"] == spec.centres_setting and r["variant"] == "nhl-full"),
                None,
            )
            if spec.centres_setting
            else None
        )
        if prefix is not None and prefix["points"]["mean"] is not None:
            pct, pts = prefix["percent"], prefix["points"]
            claims.append(
                _claim(
                    "gain:prefix",
                    f"With prefix-consistent centres, NHL improves retrieval by about "
                    f"{spec.gain_claim_percent:g}% over separately trained models ({', '.join(prefix['losses'])})",
                    "paper's claim under nhl-method.md §7's fix",
                    quality_verdict(pct, spec.gain_claim_percent, alpha),
                    f"nhl-full [{spec.centres_setting}] vs the separately trained model of the same length and seed: "
                    f"{describe(pct, '%')}, i.e. {pts['mean']:+.2f} points of mAP",
                    percent=pct,
                    points=pts,
                )
            )

        # 3. every base loss (plug-and-play)
        per_loss = {row["loss"]: quality_verdict(row["summary"], 0.0, alpha) for row in section["full_per_loss"]}
        by_verdict: dict[str, list[str]] = {}
        for loss, v in per_loss.items():
            by_verdict.setdefault(v, []).append(loss)
        evidence = "; ".join(f"{v} for {', '.join(losses)}" for v, losses in by_verdict.items()) or "no data"
        weak = list((section.get("weak_baselines") or {}).get("losses") or {})
        if weak:
            evidence += f" ({', '.join(weak)}: under-trained baselines, see the caution below)"
        claims.append(
            _claim(
                "losses",
                "NHL is plug-and-play: nhl-full beats the baselines with every base loss",
                "paper (title and abstract)",
                combine(per_loss.values()),
                evidence,
                per_loss=per_loss,
            )
        )

        # 4. every code length
        per_length = {k: quality_verdict(summary, 0.0, alpha) for k, summary in section["full_per_length"].items()}
        evidence = "; ".join(
            f"{k} bits: {section['full_per_length'][k]['mean']:+.2f} points ({v})"
            if section["full_per_length"][k]["mean"] is not None
            else f"{k} bits: no pairs"
            for k, v in per_length.items()
        )
        claims.append(
            _claim(
                "lengths",
                "NHL's gain holds at every code length, short codes included",
                "paper (multiple-length codes from one model)",
                combine(per_length.values()),
                evidence,
                per_length=per_length,
            )
        )

    # 5-8. ablations and the two nhl questions
    statements = {
        "A": ("Dominance-aware adaptive weighting (A) improves the nested model", "paper (ablation)"),
        "D": ("Long-short cascade self-distillation (D) improves the nested model", "paper (ablation)"),
        "centres:nhl-full": (
            "Prefix-consistent hash centres beat independent ones for nested training (nhl-full, centre-based losses)",
            "nhl-method.md §7 (open question)",
        ),
        "faithful:nhl-full": (
            "The corrected weighting beats the released code's behaviour (nhl-full)",
            "nhl-method.md §3 (released-code defects)",
        ),
    }
    for comp in section["comparisons"]:
        if comp["key"] in statements:
            statement, source = statements[comp["key"]]
            claims.append(
                _claim(
                    comp["key"],
                    statement,
                    source,
                    quality_verdict(comp["pooled"], 0.0, alpha),
                    f"{comp['label']}, pooled over {', '.join(comp['losses'])}: {describe(comp['pooled'])}",
                    pooled=comp["pooled"],
                )
            )
    return claims


def regime_disagreements(verdicts: list[dict[str, Any]], sections: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Claims judged in two or more regimes of one dataset, and those whose verdicts differ.

    `verdicts` carry their section in `dataset` (see `ClaimsSpec.sections`); "no data" is not a
    verdict to disagree with. Returns `{"compared": n, "disagree": [{dataset, id, statement, by_regime}]}`.
    """
    groups: dict[tuple[str, str], dict[str, Any]] = {}
    for claim in verdicts:
        info = sections.get(claim["dataset"]) or {}
        if not info.get("regime"):
            continue
        group = groups.setdefault((info["dataset"], claim["id"]), {"statement": claim["statement"], "by_regime": {}})
        group["by_regime"][info["regime"]] = claim["verdict"]
    compared, disagree = 0, []
    for (dataset, cid), group in groups.items():
        known = {r: v for r, v in group["by_regime"].items() if v != NO_DATA}
        if len(known) < 2:
            continue
        compared += 1
        if len(set(known.values())) > 1:
            disagree.append({"dataset": dataset, "id": cid, "statement": group["statement"], "by_regime": known})
    return {"compared": compared, "disagree": disagree}
