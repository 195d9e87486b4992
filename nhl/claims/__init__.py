"""The claims report: do the NHL paper's claims hold on our data? (`reports/claims.md`)

The claims experiment runs the default DVC pipeline once per cell (dataset x seed x setting, see
`plan`) as a DVC experiment (`dvcexp`), and copies each experiment's results into a runs folder
(`runs`). This package turns those folders into the report: per loss and length, mean ± std over
seeds of every model and its paired difference from the separately trained model (`tables`),
sign tests and bootstrap intervals (`stats`), one verdict per claim and section (a dataset in one
regime) with the regimes' disagreements (`verdicts`), one verdict per swept value of A's and D's
knobs (`sweeps`), a recommendation per loss (`recommend`), figures (`plots`) and the markdown
(`markdown`).

```
report = build_claims("reports/claims/runs", spec, cell_ids=[c.cell_id for c in cells],
                      digests={c.cell_id: c.digest for c in cells}, header={"command": "..."})
write_claims(report, "reports/claims.md", "reports/claims")
```
Every input is read and checked before anything is written; the figures folder is swapped in
whole and each file is replaced atomically, so a failure leaves the previous report as it was.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from nhl.claims.machine import mixed_machines
from nhl.claims.recommend import recommendations
from nhl.claims.runs import load_cells
from nhl.claims.sweeps import sweep_claims, sweep_results
from nhl.claims.tables import BASELINE, FULL, ClaimsSpec, Index, Tables, weak_baselines
from nhl.claims.verdicts import dataset_claims, regime_disagreements

SCHEMA_VERSION = 2  # 2: sections per regime (`datasets` keys), sweeps, recommendations, regimes
JSON_NAME = "claims.json"
FIGURES_DIR = "figures"


@dataclass
class ClaimsReport:
    """The report's data (the content of `claims.json`, less the figure list until written)."""

    data: dict[str, Any]


def _dataset_section(tables: Tables, spec: ClaimsSpec, dataset: str) -> dict[str, Any]:
    base = spec.baseline_setting
    losses = list(dict.fromkeys(loss for setting in spec.models for loss in spec.losses(setting)))
    quality = {loss: tables.quality_rows(dataset, loss) for loss in losses}
    pooled = tables.pooled_rows(dataset)
    full = next((r for r in pooled if r["setting"] == base and r["variant"] == FULL), None)
    section: dict[str, Any] = {
        "losses": {loss: {"rows": quality[loss], "cost": tables.cost(dataset, loss)} for loss in losses},
        "pooled": pooled,
        "comparisons": tables.comparisons(dataset),
        "full_per_loss": [
            {"loss": loss, "summary": row["vs_baseline"]}
            for loss in spec.losses(base)
            for row in quality[loss]
            if row["setting"] == base and row["variant"] == FULL
        ],
        "full_per_length": full["per_length"] if full is not None else {},
        "provenance": tables.provenance(dataset),
        "weak_baselines": weak_baselines({loss: quality[loss] for loss in spec.losses(base)}),
    }
    section["sweeps"] = sweep_results(tables, dataset)
    section["recommendations"] = recommendations(spec, tables.index, dataset, section["losses"])
    section["claims"] = dataset_claims(section, tables.speedups(dataset), spec) + sweep_claims(section["sweeps"])
    return section


def build_claims(
    runs_dir: str | os.PathLike,
    spec: ClaimsSpec,
    cell_ids: list[str] | None = None,
    digests: dict[str, str] | None = None,
    header: dict[str, Any] | None = None,
) -> ClaimsReport:
    """Read the collected cells and compute every table, test and verdict; writes nothing.

    `cell_ids` are the cells expected (all folders found when None); `digests` leave out folders
    collected under other overrides; `header` (command, commit, ...) is quoted as given.
    """
    cells, notes = load_cells(runs_dir, cell_ids, digests)
    index = Index.from_cells(cells)
    tables = Tables(spec, index)
    expected = sum(len(spec.models[s]["losses"]) * len(spec.models[s]["variants"]) for s in spec.models)
    expected *= len(spec.seeds) * len(spec.datasets)
    data: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "header": dict(header or {}),
        "spec": {**asdict(spec), "speedup_claim": list(spec.speedup_claim)},
        "models": {"expected": expected, "found": len(index.results)},
        "cells": [
            {
                "cell_id": c.meta["cell_id"],
                "experiment": c.meta["experiment"],
                "rev": c.meta["rev"],
                "baseline_rev": c.meta.get("baseline_rev"),
                "models_found": len(c.results),
                "models_expected": c.meta.get("models_expected"),
                "machine": c.meta.get("machine"),
                "path": c.path,
            }
            for c in cells
        ],
        "notes": notes,
        "warnings": mixed_machines([(c.meta["dataset"], c.meta["cell_id"], c.meta.get("machine")) for c in cells]),
        "datasets": {d: _dataset_section(tables, spec, d) for d in spec.datasets},
        "figures": {},
    }
    data["verdicts"] = [{"dataset": d, **claim} for d in spec.datasets for claim in data["datasets"][d]["claims"]]
    data["regimes"] = regime_disagreements(data["verdicts"], spec.sections)
    return ClaimsReport(data)


def write_claims(
    report: ClaimsReport,
    markdown: str | os.PathLike = "reports/claims.md",
    out_dir: str | os.PathLike = "reports/claims",
) -> dict[str, Path]:
    """Draw the figures into `<out_dir>/figures/`, write `<out_dir>/claims.json` and `markdown`.

    Figures are drawn in a temporary folder and both texts rendered before the first file is
    replaced, so an error leaves the previous report in place. Returns the paths.
    """
    from nhl import atomic
    from nhl.claims.markdown import render
    from nhl.claims.plots import render_figures

    markdown, out_dir = Path(markdown), Path(out_dir)
    figures = out_dir / FIGURES_DIR
    link = Path(os.path.relpath(figures, markdown.parent)).as_posix()
    with atomic.directory(figures) as tmp:
        report.data["figures"] = render_figures(tmp, report.data, link)
        texts = {markdown: render(report.data), out_dir / JSON_NAME: json.dumps(report.data, indent=1) + "\n"}
    for path, text in texts.items():
        atomic.write_text(path, text)
    return {"markdown": markdown, "json": out_dir / JSON_NAME, "figures": figures}


__all__ = ["BASELINE", "ClaimsReport", "ClaimsSpec", "build_claims", "write_claims"]
