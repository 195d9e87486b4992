"""The comparison report: fixed-length baselines vs nested (NHL) models, per base loss.

`build_report` reads the evaluate stage's files (`metrics/<model_id>.json`, `plots/pr/`,
`plots/history/`) and computes the tables (`tables`) and the code-length chooser (`chooser`);
`collect_examples` (`retrieval`) encodes a few seeded query items and the database with each
loss's nested model and baselines, for the retrieval grids; `write_report` draws the figures
(`plots`, `retrieval`), renders `comparison.md` (`markdown`) and writes it
with `comparison.json` (the same data, for later stages) and `map_vs_bits.csv` (for `dvc plots`).

```
report = build_report("metrics", "plots", losses=["csq"], variants=["baseline-16", "nhl-full"],
                      tolerance=0.01, manifest="data/splits")
write_report(report, "reports", map_csv="plots/map_vs_bits.csv")
```
Every input is read and checked before anything is written, and the figures directory is
swapped in whole: a failure leaves the previous report as it was.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nhl.layout import history_file, pr_file
from nhl.report.chooser import chooser
from nhl.report.health import zoo_health
from nhl.report.inputs import (
    discover,
    load_results,
    read_benchmark,
    read_history,
    read_manifest_meta,
    read_pr,
)
from nhl.report.tables import loss_section, map_vs_bits_csv, metric_labels, model_row

MARKDOWN_NAME = "comparison.md"
JSON_NAME = "comparison.json"
FIGURES_DIR = "figures"
SCHEMA_VERSION = 1
_MANIFEST_KEYS = ("dataset", "protocol", "seed", "content_hash")


@dataclass
class Report:
    """The comparison data (`comparison.json` less its figure list) and the curves the figures need."""

    data: dict[str, Any]
    pr: dict[str, Any]
    history: dict[str, Any]
    thumbs: dict[int, Any] = field(default_factory=dict)  # item id -> thumbnail, for the retrieval grids


def _common_topk(results: dict[str, Any]) -> int | None:
    present = [r for r in results.values() if r is not None]
    for result in present[1:]:
        if result.topk != present[0].topk:
            raise ValueError(
                f"{result.path}: topk {result.topk} differs from {present[0].path} "
                f"({present[0].topk}); evaluate every model the same way"
            )
    return present[0].topk if present else None


def header(manifest: str | os.PathLike | None, params: dict[str, Any] | None, topk: int | None) -> dict[str, Any]:
    """What produced the report: the split manifest's identity and the parameters given."""
    meta = read_manifest_meta(manifest)
    head: dict[str, Any] = {"topk": topk, "params": params or {}}
    if meta is None or manifest is None:
        head["manifest"] = None
        head["manifest_note"] = f"looked in {manifest}" if manifest is not None else "not given"
        return head
    path = Path(manifest)
    head["manifest"] = str(path / "manifest.json" if path.is_dir() else path)
    head.update({key: meta.get(key) for key in _MANIFEST_KEYS})
    head["split_summary"] = (meta.get("protocol_spec") or {}).get("summary")
    head["sizes"] = meta.get("sizes")
    return head


def build_report(
    metrics_dir: str | os.PathLike,
    plots_dir: str | os.PathLike,
    losses: list[str] | None = None,
    variants: list[str] | None = None,
    tolerance: float = 0.01,
    manifest: str | os.PathLike | None = None,
    benchmark: str | os.PathLike | None = None,
    params: dict[str, Any] | None = None,
    examples: Any = None,
) -> Report:
    """Read and check every input and compute the report's data; writes nothing.

    `losses` x `variants` are the models expected (missing ones show as "—"); when either is
    None, both come from the metrics files found. `params` (sections of params.yaml) are
    quoted in the header; `benchmark` is the search benchmark's JSON, used if it exists;
    `examples` the retrieval examples (`retrieval.collect_examples`), drawn when given.
    """
    if isinstance(tolerance, bool) or not isinstance(tolerance, (int, float)) or not 0 <= tolerance < 1:
        raise ValueError(f"report.tolerance: expected an mAP difference in [0, 1), e.g. 0.01, got {tolerance!r}")
    if losses is None or variants is None:
        losses, variants = discover(metrics_dir)
    results = load_results(metrics_dir, list(losses), list(variants))
    topk = _common_topk(results)
    sections = {loss: loss_section(loss, list(variants), results) for loss in losses}
    plots_dir = Path(plots_dir)
    pr = {m: read_pr(pr_file(plots_dir, m)) for m, r in results.items() if r is not None}
    history = {m: read_history(history_file(plots_dir, m)) for m, r in results.items() if r is not None}
    data = {
        "schema_version": SCHEMA_VERSION,
        "header": header(manifest, params, topk),
        "metric_labels": metric_labels(topk),
        "models": {
            f"{loss}-{v}": model_row(f"{loss}-{v}", v, results[f"{loss}-{v}"]) for loss in losses for v in variants
        },
        "losses": sections,
        "chooser": chooser(sections, float(tolerance), read_benchmark(benchmark)),
        "health": zoo_health(sections),
        "figures": {},
    }
    if examples is not None:
        data["retrieval"] = examples.data
    return Report(data=data, pr=pr, history=history, thumbs=examples.thumbs if examples is not None else {})


def write_report(
    report: Report, out_dir: str | os.PathLike = "reports", map_csv: str | os.PathLike | None = "plots/map_vs_bits.csv"
) -> dict[str, Path]:
    """Draw the figures and write `comparison.md`, `comparison.json` and the mAP-vs-bits CSV.

    The figures are drawn into a temporary directory and every text is rendered before the
    first file is replaced, so an error leaves the old report in place. Returns the paths.
    """
    from nhl import atomic
    from nhl.report.markdown import render
    from nhl.report.plots import render_figures
    from nhl.report.retrieval import draw_retrieval

    out_dir = Path(out_dir)
    with atomic.directory(out_dir / FIGURES_DIR) as tmp:
        report.data["figures"] = render_figures(tmp, report.data, report.pr, report.history, prefix=FIGURES_DIR)
        for loss, entry in report.data.get("retrieval", {}).get("losses", {}).items():
            name = f"{loss}-retrieval.png"
            if draw_retrieval(tmp / name, loss, entry, report.thumbs):
                report.data["figures"].setdefault(loss, {})["retrieval"] = f"{FIGURES_DIR}/{name}"
        texts = {
            out_dir / MARKDOWN_NAME: render(report.data),
            out_dir / JSON_NAME: json.dumps(report.data, indent=1) + "\n",
        }
        if map_csv is not None:
            texts[Path(map_csv)] = map_vs_bits_csv(report.data["losses"])
    for path, text in texts.items():
        atomic.write_text(path, text)
    return {
        "markdown": out_dir / MARKDOWN_NAME,
        "json": out_dir / JSON_NAME,
        "figures": out_dir / FIGURES_DIR,
        **({"map_csv": Path(map_csv)} if map_csv is not None else {}),
    }
