"""The report's figures, as PNG files: mAP vs bits, training time, PR curves, adaptive weights.

Drawn on matplotlib `Figure` objects with the Agg canvas (no pyplot, no global backend state),
so the report runs headless and in parallel with anything else. Each baseline/variant keeps one
colour and marker across every figure. A figure with nothing to draw is not written.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from nhl.report.tables import BASELINE, map_curves

DPI = 110
_MARKERS = ("s", "^", "D", "v", "P", "X", "*", "<", ">")
_BASE_STYLE = {"color": "black", "marker": "o", "linestyle": "-", "linewidth": 2.0}
_BASE_LABEL = "baselines (one model per length)"


def new_figure(width: float, height: float):
    """A pyplot-free matplotlib Figure (Agg, safe in worker processes) with the reports' DPI and layout."""
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=DPI, layout="constrained")


def _style(variants: list[str], name: str) -> dict[str, Any]:
    if name == BASELINE:
        return dict(_BASE_STYLE)
    i = variants.index(name)
    return {"color": f"C{i % 10}", "marker": _MARKERS[i % len(_MARKERS)], "linestyle": "--", "linewidth": 1.5}


def bits_axis(ax, lengths: list[int]) -> None:
    """Code lengths on a log2 x axis, one tick per length."""
    ax.set_xscale("log", base=2)
    ax.set_xticks(lengths, [str(k) for k in lengths])
    ax.minorticks_off()
    ax.set_xlabel("code length (bits)")


def map_vs_bits(path: Path, loss: str, section: dict[str, Any], label: str) -> bool:
    """mAP per code length: the baselines' curve and one curve per nested variant."""
    curves = map_curves(section)
    if not curves:
        return False
    fig = new_figure(6.4, 4.2)
    ax = fig.add_subplot()
    for name in [BASELINE, *section["variants"]]:
        if name in curves:
            xs = sorted(curves[name])
            ax.plot(
                xs,
                [curves[name][k] for k in xs],
                label=_BASE_LABEL if name == BASELINE else name,
                **_style(section["variants"], name),
            )
    bits_axis(ax, section["lengths"])
    ax.set_ylabel(label)
    ax.set_title(f"{loss}: {label} vs code length")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    fig.savefig(path, format="png")
    return True


def train_time(path: Path, loss: str, section: dict[str, Any]) -> bool:
    """Training seconds: the baselines stacked into one bar (their sum), one bar per nested model."""
    cost = section["cost"]
    present = [r for r in cost["baselines"] if r["present"] and r["train_seconds"] is not None]
    variants = list(cost["variants"].values())
    if not present and not any(r["present"] and r["train_seconds"] is not None for r in variants):
        return False
    fig = new_figure(6.4, 4.2)
    ax = fig.add_subplot()
    bottom = 0.0
    for i, row in enumerate(present):
        shade = 0.25 + 0.5 * i / max(len(present) - 1, 1)
        ax.bar(0, row["train_seconds"], bottom=bottom, color=str(shade), edgecolor="white", width=0.6)
        ax.text(
            0,
            bottom + row["train_seconds"] / 2,
            f"{row['lengths'][0]} bits",
            ha="center",
            va="center",
            fontsize="x-small",
            color="white" if shade < 0.5 else "black",
        )
        bottom += row["train_seconds"]
    total = cost["baseline_total"]
    names = [f"baselines\n({total['present']} of {total['expected']}, summed)"]
    for i, row in enumerate(variants, start=1):
        names.append(row["variant"])
        if not row["present"] or row["train_seconds"] is None:
            ax.text(i, 0, "missing", ha="center", va="bottom", fontsize="small", color="grey")
            continue
        ax.bar(i, row["train_seconds"], color=_style(section["variants"], row["variant"])["color"], width=0.6)
        note = f"{row['speedup']:.1f}× faster" if row["speedup"] is not None else ""
        ax.text(
            i,
            row["train_seconds"],
            f"{row['train_seconds']:.0f} s\n{note}".strip(),
            ha="center",
            va="bottom",
            fontsize="small",
        )
    if present:
        ax.text(0, bottom, f"{bottom:.0f} s", ha="center", va="bottom", fontsize="small")
    ax.set_xticks(range(len(names)), names, fontsize="small")
    ax.set_ylabel("training time (s)")
    ax.set_ylim(0, ax.get_ylim()[1] * 1.12)
    ax.set_title(f"{loss}: training time, all lengths")
    ax.grid(axis="y", alpha=0.3)
    fig.savefig(path, format="png")
    return True


def pr_curves(
    path: Path, loss: str, section: dict[str, Any], pr: dict[str, dict[int, list[tuple[int, float, float]]] | None]
) -> bool:
    """One panel per length with PR files: the baseline of that length and each nested variant."""
    panels: dict[int, list[tuple[str, list[tuple[int, float, float]]]]] = {}
    for bits_key, variant in section["baselines"].items():
        curve = (pr.get(f"{loss}-{variant}") or {}).get(int(bits_key))
        if curve:
            panels.setdefault(int(bits_key), []).append((BASELINE, curve))
    for variant in section["variants"]:
        for bits, curve in (pr.get(f"{loss}-{variant}") or {}).items():
            if curve:
                panels.setdefault(bits, []).append((variant, curve))
    if not panels:
        return False
    fig = new_figure(4.6 * len(panels), 4.2)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, bits in zip(axes, sorted(panels), strict=True):
        for name, curve in panels[bits]:
            style = _style(section["variants"], name) | {"markersize": 4}
            ax.plot(
                [c[2] for c in curve],
                [c[1] for c in curve],
                label=f"baseline-{bits}" if name == BASELINE else name,
                **style,
            )
        ax.set_xlabel("recall")
        ax.set_ylabel("precision")
        ax.set_xlim(0, 1.02)
        ax.set_ylim(0, 1.02)
        ax.set_title(f"{loss}, {bits} bits: hash lookup by Hamming radius")
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small", loc="lower left")
    fig.savefig(path, format="png")
    return True


def adaptive_weights(
    path: Path, loss: str, section: dict[str, Any], history: dict[str, list[dict[str, Any]] | None]
) -> bool:
    """Mean adaptive weight of each length per epoch, one panel per variant that recorded weights."""
    panels = []
    for variant in section["variants"]:
        rows = history.get(f"{loss}-{variant}") or []
        if any("weight_0" in row for row in rows):
            panels.append((variant, rows))
    if not panels:
        return False
    from matplotlib.ticker import MaxNLocator

    models = {row["variant"]: row for row in section["cost"]["variants"].values()}
    fig = new_figure(4.6 * len(panels), 3.8)
    axes = fig.subplots(1, len(panels), squeeze=False, sharey=True)[0]
    for ax, (variant, rows) in zip(axes, panels, strict=True):
        lengths = models.get(variant, {}).get("lengths") or []
        n = max(int(k.split("_")[1]) for row in rows for k in row if k.startswith("weight_") and k[7:].isdigit()) + 1
        for i in range(n):
            points = [(row["epoch"], row[f"weight_{i}"]) for row in rows if f"weight_{i}" in row]
            name = f"{lengths[i]} bits" if i < len(lengths) else f"length {i}"
            ax.plot(
                [p[0] for p in points],
                [p[1] for p in points],
                marker=_MARKERS[i % len(_MARKERS)],
                color=f"C{i % 10}",
                label=name,
            )
        ax.axhline(1.0, color="grey", linewidth=0.8, linestyle=":")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch")
        ax.set_title(f"{loss}-{variant}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize="x-small", ncols=2)
    axes[0].set_ylabel("mean adaptive weight")
    fig.savefig(path, format="png")
    return True


FIGURES: dict[str, Callable[..., bool]] = {
    "map_vs_bits": map_vs_bits,
    "train_time": train_time,
    "pr": pr_curves,
    "weights": adaptive_weights,
}


def render_figures(
    out_dir: str | Path, data: dict[str, Any], pr: dict[str, Any], history: dict[str, Any], prefix: str = "figures"
) -> dict[str, dict[str, str]]:
    """Write every figure into `out_dir`; returns `{loss: {figure: "<prefix>/<loss>-<figure>.png"}}`."""
    out_dir = Path(out_dir)
    written: dict[str, dict[str, str]] = {}
    for loss, section in data["losses"].items():
        written[loss] = {}
        extra = {"map_vs_bits": (data["metric_labels"]["map"],), "train_time": (), "pr": (pr,), "weights": (history,)}
        for key, draw in FIGURES.items():
            name = f"{loss}-{key}.png"
            if draw(out_dir / name, loss, section, *extra[key]):
                written[loss][key] = f"{prefix}/{name}"
    return written
