"""The claims tables: quality per loss and length over seeds, paired comparisons, training cost.

Everything is plain JSON-ready data computed from the collected cells; the markdown, the figures
and `claims.json` are rendered from it. A model that is missing leaves `None` where its numbers
would be, and every difference, ratio or test that needs it is computed from the pairs that
exist only (the pair counts are reported next to each result).

Rows of a loss's quality table: the separately trained models ("baseline": `baseline-<k>` at
length k, from the baseline setting), then each nested variant of each setting. Differences are
always paired: the same seed and length, in mAP points (1 point = 0.01).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from nhl.claims.runs import CollectedCell
from nhl.claims.stats import mean_std, summarise
from nhl.report.health import WEAK_FRACTION, weak_losses
from nhl.report.inputs import ModelResult

BASELINE = "baseline"
PLAIN, WITH_A, WITH_D, FULL = "nhl-noA-noD", "nhl-A", "nhl-D", "nhl-full"


@dataclass(frozen=True)
class ClaimsSpec:
    """What the report expects (missing models show as "—") and how it tests.

    `models` maps each setting to the losses and variants its cells train. The baseline setting
    holds the separately trained models every nested model is compared with; the centres and
    faithful settings (None when not planned) differ from it in one switch each.
    """

    datasets: tuple[str, ...]
    seeds: tuple[int, ...]
    lengths: tuple[int, ...]
    models: dict[str, dict[str, tuple[str, ...]]] = field(hash=False)
    baseline_setting: str = "default"
    centres_setting: str | None = "prefix"
    faithful_setting: str | None = "faithful"
    confidence: float = 0.95
    resamples: int = 10_000
    bootstrap_seed: int = 0
    alpha: float = 0.05
    speedup_claim: tuple[float, float] = (5.0, 8.0)
    gain_claim_percent: float = 3.4
    tolerance: float = 0.01  # the recommendation's code-length chooser (mAP, 0.01 = 1 point)
    # {section: {"dataset", "regime"}}: a section is a dataset in one regime (`Cell.section`); empty
    # when the plan has no regimes (a section is then a dataset)
    sections: dict[str, dict[str, Any]] = field(default_factory=dict, hash=False)
    sweeps: tuple[dict[str, Any], ...] = field(default=(), hash=False)  # `nhl.claims.sweeps.sweep_spec` of each
    settings: dict[str, dict[str, Any]] = field(default_factory=dict, hash=False)  # each setting's overrides

    def __post_init__(self) -> None:
        if self.baseline_setting not in self.models:
            raise ValueError(
                f"claims: baseline setting {self.baseline_setting!r} is not planned "
                f"(settings: {', '.join(self.models)})"
            )
        for name in (self.centres_setting, self.faithful_setting):
            if name is not None and name not in self.models:
                raise ValueError(f"claims: setting {name!r} is not planned (settings: {', '.join(self.models)})")

    def nested(self, setting: str) -> list[str]:
        return [v for v in self.models[setting]["variants"] if not v.startswith(f"{BASELINE}-")]

    def losses(self, setting: str) -> list[str]:
        return list(self.models[setting]["losses"])

    def row_keys(self, loss: str) -> list[tuple[str, str]]:
        """(setting, variant) of a loss's rows: the baselines, then each setting's nested variants."""
        keys = [(self.baseline_setting, BASELINE)]
        for setting in self.models:
            if loss in self.models[setting]["losses"]:
                keys += [(setting, v) for v in self.nested(setting)]
        return keys

    def section_label(self, section: str) -> str:
        """`mnist5k (frozen)`: the section's dataset and regime (the section itself without regimes)."""
        info = self.sections.get(section) or {}
        return f"{info['dataset']} ({info['regime']})" if info.get("regime") else section

    def label(self, setting: str, variant: str) -> str:
        if variant == BASELINE:
            return "baselines (one model per length)"
        return variant if setting == self.baseline_setting else f"{variant} [{setting}]"


@dataclass
class Index:
    """Every collected model by (dataset, setting, loss, variant, seed), with its provenance."""

    results: dict[tuple[str, str, str, str, int], ModelResult] = field(default_factory=dict)
    sources: dict[tuple[str, str, str, str, int], dict[str, Any]] = field(default_factory=dict)

    @classmethod
    def from_cells(cls, cells: Iterable[CollectedCell]) -> Index:
        index = cls()
        for cell in cells:
            meta = cell.meta
            for model_id, result in cell.results.items():
                key = (section_of(meta), meta["setting"], result.loss, result.variant, int(meta["seed"]))
                index.results[key] = result
                index.sources[key] = {
                    "cell": meta["cell_id"],
                    "experiment": meta["experiment"],
                    "rev": meta["rev"],
                    **cell.sources.get(model_id, {}),
                }
        return index

    def get(self, dataset: str, setting: str, loss: str, variant: str, seed: int) -> ModelResult | None:
        return self.results.get((dataset, setting, loss, variant, seed))

    def map_at(self, dataset: str, setting: str, loss: str, variant: str, seed: int, bits: int) -> float | None:
        """mAP of a row at one length: a baseline row reads `baseline-<bits>`."""
        name = f"{BASELINE}-{bits}" if variant == BASELINE else variant
        result = self.get(dataset, setting, loss, name, seed)
        if result is None or bits not in result.bits:
            return None
        return result.bits[bits]["map"]


def section_of(meta: dict[str, Any]) -> str:
    """The report section of a collected cell: its id less `-s<seed>-<setting>` (`Cell.section`:
    the dataset, plus `-<regime>` outside the reference regime); the dataset for other ids."""
    suffix = f"-s{meta['seed']}-{meta['setting']}"
    cell_id = str(meta.get("cell_id", ""))
    return cell_id[: -len(suffix)] if cell_id.endswith(suffix) and len(cell_id) > len(suffix) else meta["dataset"]


def weak_baselines(quality: dict[str, list[dict[str, Any]]], fraction: float = WEAK_FRACTION) -> dict[str, Any]:
    """Losses whose separately trained models stay far behind the dataset's best loss.

    A loss is weak when its best baseline (mean over seeds, at any length) reaches less than
    `fraction` of the best baseline of any loss (`nhl.report.health.weak_losses`, the rule the
    comparison report's zoo health line uses too): such models are still learning, so differences
    measured on them say little about the method. `quality` is `{loss: quality_rows}`.
    """
    best = {}
    for loss, rows in quality.items():
        values = [
            c["mean"]
            for row in rows
            if row["variant"] == BASELINE
            for c in row["cells"].values()
            if c["mean"] is not None
        ]
        if values:
            best[loss] = max(values)
    found = weak_losses(best, fraction)
    return {key: found[key] for key in ("losses", "best_loss", "best_map", "fraction")}


def _stat(values: list[float]) -> dict[str, Any]:
    mean, std = mean_std(values)
    return {"mean": mean, "std": std, "n": len(values)}


class Tables:
    """Computes the report's tables for one spec over one index."""

    def __init__(self, spec: ClaimsSpec, index: Index) -> None:
        self.spec, self.index = spec, index

    def summary(self, differences: list[float]) -> dict[str, Any]:
        s = self.spec
        return summarise(differences, s.confidence, s.resamples, s.bootstrap_seed).as_dict()

    # -- paired differences ------------------------------------------------------------------
    def pairs(
        self,
        dataset: str,
        losses: Iterable[str],
        a: tuple[str, str],
        b: tuple[str, str],
        lengths: Iterable[int] | None = None,
    ) -> list[tuple[float, float]]:
        """(a, b) mAP pairs over losses x seeds x lengths where both rows have a value."""
        out = []
        for loss in losses:
            for seed in self.spec.seeds:
                for bits in self.spec.lengths if lengths is None else lengths:
                    va = self.index.map_at(dataset, a[0], loss, a[1], seed, bits)
                    vb = self.index.map_at(dataset, b[0], loss, b[1], seed, bits)
                    if va is not None and vb is not None:
                        out.append((va, vb))
        return out

    @staticmethod
    def points(pairs: list[tuple[float, float]]) -> list[float]:
        return [100.0 * (a - b) for a, b in pairs]

    @staticmethod
    def percent(pairs: list[tuple[float, float]]) -> list[float]:
        """Relative differences 100 (a - b) / b, pairs with b = 0 left out."""
        return [100.0 * (a - b) / b for a, b in pairs if b > 0]

    # -- quality ---------------------------------------------------------------------------------
    def quality_rows(self, dataset: str, loss: str) -> list[dict[str, Any]]:
        """One row per (setting, variant): mean ± std over seeds per length, paired Δ vs baselines."""
        base = (self.spec.baseline_setting, BASELINE)
        rows = []
        for setting, variant in self.spec.row_keys(loss):
            cells = {}
            for bits in self.spec.lengths:
                values = [
                    v
                    for seed in self.spec.seeds
                    if (v := self.index.map_at(dataset, setting, loss, variant, seed, bits)) is not None
                ]
                cell = _stat(values)
                if variant != BASELINE:
                    diffs = self.points(self.pairs(dataset, [loss], (setting, variant), base, [bits]))
                    cell["diff"] = _stat(diffs)
                cells[str(bits)] = cell
            row = {"setting": setting, "variant": variant, "label": self.spec.label(setting, variant), "cells": cells}
            if variant != BASELINE:
                row["vs_baseline"] = self.summary(self.points(self.pairs(dataset, [loss], (setting, variant), base)))
            rows.append(row)
        return rows

    def pooled_rows(self, dataset: str) -> list[dict[str, Any]]:
        """Each nested row against the baselines, pooled over the losses that have it."""
        base = (self.spec.baseline_setting, BASELINE)
        rows = []
        for setting in self.spec.models:
            losses = self.spec.losses(setting)
            for variant in self.spec.nested(setting):
                pairs = self.pairs(dataset, losses, (setting, variant), base)
                per_length = {
                    str(k): self.summary(self.points(self.pairs(dataset, losses, (setting, variant), base, [k])))
                    for k in self.spec.lengths
                }
                rows.append(
                    {
                        "setting": setting,
                        "variant": variant,
                        "label": self.spec.label(setting, variant),
                        "losses": losses,
                        "per_length": per_length,
                        "points": self.summary(self.points(pairs)),
                        "percent": self.summary(self.percent(pairs)),
                    }
                )
        return rows

    def comparison_list(self) -> list[dict[str, Any]]:
        """The paired comparisons between nested models (ablations, centres, faithful switch)."""
        s = self.spec
        base = s.baseline_setting
        nested = s.nested(base)
        found = []

        def add(key: str, label: str, a: tuple[str, str], b: tuple[str, str], losses: list[str]) -> None:
            if a[1] in s.nested(a[0]) and b[1] in s.nested(b[0]):
                found.append({"key": key, "label": label, "a": list(a), "b": list(b), "losses": losses})

        if PLAIN in nested:
            add("A", f"A over plain ({WITH_A} − {PLAIN})", (base, WITH_A), (base, PLAIN), s.losses(base))
            add("D", f"D over plain ({WITH_D} − {PLAIN})", (base, WITH_D), (base, PLAIN), s.losses(base))
            add("AD", f"A and D over plain ({FULL} − {PLAIN})", (base, FULL), (base, PLAIN), s.losses(base))
        add("A|D", f"A on top of D ({FULL} − {WITH_D})", (base, FULL), (base, WITH_D), s.losses(base))
        add("D|A", f"D on top of A ({FULL} − {WITH_A})", (base, FULL), (base, WITH_A), s.losses(base))
        if s.centres_setting is not None:
            losses = [loss for loss in s.losses(s.centres_setting) if loss in s.losses(base)]
            for v in s.nested(s.centres_setting):
                add(
                    f"centres:{v}",
                    f"prefix-consistent − independent centres ({v})",
                    (s.centres_setting, v),
                    (base, v),
                    losses,
                )
        if s.faithful_setting is not None:
            losses = [loss for loss in s.losses(s.faithful_setting) if loss in s.losses(base)]
            for v in s.nested(s.faithful_setting):
                add(
                    f"faithful:{v}",
                    f"corrected defaults − released code's behaviour ({v})",
                    (base, v),
                    (s.faithful_setting, v),
                    losses,
                )
        return found

    def comparisons(self, dataset: str) -> list[dict[str, Any]]:
        out = []
        for comp in self.comparison_list():
            a, b = tuple(comp["a"]), tuple(comp["b"])
            per_loss = {loss: self.summary(self.points(self.pairs(dataset, [loss], a, b))) for loss in comp["losses"]}
            out.append(
                {
                    **comp,
                    "per_loss": per_loss,
                    "pooled": self.summary(self.points(self.pairs(dataset, comp["losses"], a, b))),
                }
            )
        return out

    # -- cost ------------------------------------------------------------------------------------
    def baseline_totals(self, dataset: str, loss: str) -> dict[int, dict[str, Any]]:
        """Per seed with every baseline length present: summed seconds, summed s/epoch, max peak MiB."""
        s = self.spec
        totals = {}
        for seed in s.seeds:
            results = [self.index.get(dataset, s.baseline_setting, loss, f"{BASELINE}-{k}", seed) for k in s.lengths]
            timed = [
                r for r in results if r is not None and r.train_seconds is not None and r.seconds_per_epoch is not None
            ]
            if len(timed) == len(results):
                peaks = [r.peak_memory_mb for r in timed if r.peak_memory_mb is not None]
                totals[seed] = {
                    "seconds": sum(r.train_seconds or 0.0 for r in timed),
                    "per_epoch": sum(r.seconds_per_epoch or 0.0 for r in timed),
                    "peak": max(peaks) if peaks else None,
                }
        return totals

    def cost(self, dataset: str, loss: str) -> dict[str, Any]:
        """Training seconds, seconds per epoch and peak memory: the baselines' sum vs each nested model.

        Per seed: the baselines' total needs every length present; speed-up = that total / the
        nested model's seconds; overheads are per-epoch time relative to the plain nested model.
        """
        s, base = self.spec, self.spec.baseline_setting
        totals = self.baseline_totals(dataset, loss)
        out: dict[str, Any] = {
            "baselines": {
                "seconds": _stat([t["seconds"] for t in totals.values()]),
                "seconds_per_epoch": _stat([t["per_epoch"] for t in totals.values()]),
                "peak_memory_mb": _stat([t["peak"] for t in totals.values() if t["peak"] is not None]),
                "seeds_complete": sorted(totals),
            },
            "variants": {},
        }
        if loss not in s.losses(base):
            return out
        for variant in s.nested(base):
            runs = {
                seed: r for seed in s.seeds if (r := self.index.get(dataset, base, loss, variant, seed)) is not None
            }
            plain = {seed: self.index.get(dataset, base, loss, PLAIN, seed) for seed in runs}
            overhead = [
                100.0 * (r.seconds_per_epoch / p.seconds_per_epoch - 1)
                for seed, r in runs.items()
                if (p := plain[seed]) is not None and r.seconds_per_epoch and p.seconds_per_epoch
            ]

            def present(name: str, runs: dict[int, Any] = runs) -> list[float]:
                return [float(getattr(r, name)) for r in runs.values() if getattr(r, name) is not None]

            out["variants"][variant] = {
                "seconds": _stat(present("train_seconds")),
                "seconds_per_epoch": _stat(present("seconds_per_epoch")),
                "epochs": _stat(present("epochs")),
                "peak_memory_mb": _stat(present("peak_memory_mb")),
                "speedup": _stat(self.speedups(dataset, variant, [loss])),
                "epoch_speedup": _stat(
                    [
                        totals[seed]["per_epoch"] / r.seconds_per_epoch
                        for seed, r in runs.items()
                        if seed in totals and r.seconds_per_epoch
                    ]
                ),
                "epoch_overhead_percent": _stat(overhead) if variant != PLAIN else None,
            }
        return out

    def speedups(self, dataset: str, variant: str = FULL, losses: Iterable[str] | None = None) -> list[float]:
        """Per (loss, seed): the baselines' total training seconds / one nested model's seconds."""
        base = self.spec.baseline_setting
        values = []
        for loss in self.spec.losses(base) if losses is None else losses:
            for seed, total in self.baseline_totals(dataset, loss).items():
                result = self.index.get(dataset, base, loss, variant, seed)
                if result is not None and result.train_seconds:
                    values.append(total["seconds"] / result.train_seconds)
        return values

    # -- provenance ------------------------------------------------------------------------------
    def provenance(self, dataset: str) -> list[dict[str, Any]]:
        """One row per model: where its numbers come from (experiment, commit, md5s, MLflow run)."""
        rows = []
        for (d, setting, loss, variant, seed), result in sorted(
            self.index.results.items(), key=lambda kv: (kv[0][1], kv[0][4], kv[0][2], kv[0][3])
        ):
            if d != dataset:
                continue
            src = self.index.sources[(d, setting, loss, variant, seed)]
            rows.append(
                {
                    "setting": setting,
                    "seed": seed,
                    "model_id": result.model_id,
                    "cell": src.get("cell"),
                    "experiment": src.get("experiment"),
                    "rev": src.get("rev"),
                    "model_md5": src.get("model_md5"),
                    "mlflow_run_id": result.mlflow_run_id,
                }
            )
        return rows
