"""The claims figures (PNG, matplotlib Agg, no pyplot), per dataset:

- `<dataset>-map.png`: mAP vs code length per loss, mean ± std over seeds, baselines vs nested models;
- `<dataset>-delta.png`: mean Δ vs the baselines with its 95% bootstrap interval, per model and loss;
- `<dataset>-time.png`: training seconds, the baselines' total vs each nested model, per loss.
A figure with nothing to draw is not written. The figure helpers are the comparison report's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from nhl.claims.tables import BASELINE
from nhl.report.plots import bits_axis, new_figure


def _style(i: int, baseline: bool) -> dict[str, Any]:
    if baseline:
        return {"color": "black", "marker": "o", "linestyle": "-", "linewidth": 2.0}
    markers = ("s", "^", "D", "v", "P", "X", "*", "<", ">", "h")
    return {"color": f"C{i % 10}", "marker": markers[i % len(markers)], "linestyle": "--", "linewidth": 1.3}


def map_figure(path: Path, dataset: str, section: dict[str, Any], lengths: list[int]) -> bool:
    losses = [
        loss
        for loss, body in section["losses"].items()
        if any(c["mean"] is not None for row in body["rows"] for c in row["cells"].values())
    ]
    if not losses:
        return False
    cols = min(3, len(losses))
    rows_n = -(-len(losses) // cols)
    fig = new_figure(4.4 * cols, 3.6 * rows_n)
    axes = fig.subplots(rows_n, cols, squeeze=False).ravel()
    for ax, loss in zip(axes, losses, strict=False):
        for i, row in enumerate(section["losses"][loss]["rows"]):
            xs = [k for k in lengths if row["cells"][str(k)]["mean"] is not None]
            if not xs:
                continue
            ys = [row["cells"][str(k)]["mean"] for k in xs]
            err = [row["cells"][str(k)]["std"] or 0.0 for k in xs]
            ax.errorbar(
                xs, ys, yerr=err, capsize=2, markersize=4, label=row["label"], **_style(i, row["variant"] == BASELINE)
            )
        bits_axis(ax, lengths)
        ax.set_ylabel("mAP@ALL")
        ax.set_title(f"{dataset}: {loss}")
        ax.grid(alpha=0.3)
    for ax in axes[len(losses) :]:
        ax.set_visible(False)
    axes[0].legend(fontsize="x-small")
    fig.savefig(path, format="png")
    return True


def delta_figure(path: Path, dataset: str, section: dict[str, Any]) -> bool:
    pooled = [r for r in section["pooled"] if r["points"]["mean"] is not None]
    if not pooled:
        return False
    fig = new_figure(7.0, 0.45 * len(pooled) + 1.6)
    ax = fig.add_subplot()
    per_loss = {
        (row["setting"], row["variant"]): {
            loss: r["vs_baseline"]
            for loss, body in section["losses"].items()
            for r in body["rows"]
            if (r["setting"], r["variant"]) == (row["setting"], row["variant"])
        }
        for row in pooled
    }
    colour = {loss: f"C{j % 10}" for j, loss in enumerate(section["losses"])}  # one colour per loss, every row
    labelled: set[str] = set()
    for y, row in enumerate(pooled):
        summary = row["points"]
        low = summary["ci_low"] if summary["ci_low"] is not None else summary["mean"]
        high = summary["ci_high"] if summary["ci_high"] is not None else summary["mean"]
        ax.errorbar(
            [summary["mean"]],
            [y],
            xerr=[[summary["mean"] - low], [high - summary["mean"]]],
            fmt="o",
            color="black",
            capsize=3,
            zorder=3,
        )
        for loss, s in per_loss[(row["setting"], row["variant"])].items():
            if s["mean"] is not None:
                ax.scatter(
                    [s["mean"]],
                    [y + 0.18],
                    s=14,
                    color=colour[loss],
                    zorder=2,
                    label=None if loss in labelled else loss,
                )
                labelled.add(loss)
    ax.axvline(0, color="grey", linewidth=1)
    ax.set_yticks(range(len(pooled)), [r["label"] for r in pooled], fontsize="small")
    ax.set_ylim(len(pooled) - 0.5, -0.5)  # first row on top
    ax.set_xlabel("Δ mAP vs separately trained models (points)\npooled mean and 95% CI (black), per loss (dots)")
    ax.set_title(f"{dataset}: nested models vs fixed-length baselines")
    ax.grid(axis="x", alpha=0.3)
    ax.legend(fontsize="x-small", loc="best")
    fig.savefig(path, format="png")
    return True


def time_figure(path: Path, dataset: str, section: dict[str, Any]) -> bool:
    losses = [
        loss
        for loss, body in section["losses"].items()
        if body["cost"]["baselines"]["seconds"]["mean"] is not None
        or any(v["seconds"]["mean"] is not None for v in body["cost"]["variants"].values())
    ]
    if not losses:
        return False
    variants = list(dict.fromkeys(v for loss in losses for v in section["losses"][loss]["cost"]["variants"]))
    names = ["baselines (sum)", *variants]
    width = 0.8 / len(names)
    fig = new_figure(max(6.4, 1.3 * len(losses) * len(names) / 3), 4.2)
    ax = fig.add_subplot()
    for j, name in enumerate(names):
        xs, ys, errs = [], [], []
        for i, loss in enumerate(losses):
            cost = section["losses"][loss]["cost"]
            stat = cost["baselines"]["seconds"] if j == 0 else (cost["variants"].get(name) or {}).get("seconds")
            if stat and stat["mean"] is not None:
                xs.append(i + (j - (len(names) - 1) / 2) * width)
                ys.append(stat["mean"])
                errs.append(stat["std"] or 0.0)
        ax.bar(xs, ys, width=width, yerr=errs, capsize=2, label=name, color="0.35" if j == 0 else f"C{(j - 1) % 10}")
    ax.set_xticks(range(len(losses)), losses)
    ax.set_ylabel("training time (s), mean over seeds")
    ax.set_title(f"{dataset}: training time, all lengths")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize="x-small")
    fig.savefig(path, format="png")
    return True


def render_figures(folder: Path, data: dict[str, Any], link: str) -> dict[str, dict[str, str]]:
    """Draw every figure into `folder`; `{dataset: {name: link/file}}` of those written."""
    lengths = data["spec"]["lengths"]
    out: dict[str, dict[str, str]] = {}
    for dataset, section in data["datasets"].items():
        drawn = {}
        for name, draw in (
            ("map", lambda p, d=dataset, s=section: map_figure(p, d, s, lengths)),
            ("delta", lambda p, d=dataset, s=section: delta_figure(p, d, s)),
            ("time", lambda p, d=dataset, s=section: time_figure(p, d, s)),
        ):
            file = f"{dataset}-{name}.png"
            if draw(Path(folder) / file):
                drawn[name] = f"{link}/{file}"
        out[dataset] = drawn
    return out
