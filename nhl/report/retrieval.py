"""Retrieval examples: what each model actually retrieves for a few fixed query items.

For each base loss, the nested model (one model, every length) and the matching baselines (one
model per length) retrieve the top-k database items of the same seeded query items at every
code length. `collect_examples` encodes only what it shows: the chosen query items and the
database once per model (mnist5k: 2,300 images, about a second per model on a CPU), then ranks
with the exact FAISS flat index `nhl search` uses. `draw_retrieval` lays the hits out as one
image grid per loss: a block per query, a row per (model, length), relevant hits (sharing a label
with the query) in a solid green frame, irrelevant ones in a dashed red frame.

Models are loaded through `nhl.serving.resolve_model`, the one place model specs resolve.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

TILE = 32  # thumbnail side in the figure (pixels)
_RELEVANT = (42, 157, 58)
_IRRELEVANT = (214, 40, 40)
_UNKNOWN = (170, 170, 170)


@dataclass
class Examples:
    """`data` (JSON, kept in comparison.json: queries and per-row hits) and the thumbnails drawn."""

    data: dict[str, Any]
    thumbs: dict[int, np.ndarray] = field(default_factory=dict)


def pick_queries(query_ids: Sequence[int], n: int, seed: int) -> list[int]:
    """`n` query item ids drawn with `seed` (the same for every loss and model), in split order."""
    ids = np.asarray(query_ids)
    if n < 1:
        raise ValueError(f"report.examples.queries: expected a positive count, got {n}")
    rows = np.sort(np.random.default_rng(seed).choice(len(ids), size=min(n, len(ids)), replace=False))
    return [int(ids[r]) for r in rows]


def _encode(model: Any, dataset: Any, rows: Sequence[int] | None = None) -> np.ndarray:
    """±1 codes int8 [N, k_max] of the dataset's items (all, or `rows`)."""
    import torch

    from nhl.codes import Codes, encode_batches

    rows = range(len(dataset)) if rows is None else rows
    batches = (torch.stack([dataset[i][0] for i in list(rows)[s : s + 256]]) for s in range(0, len(rows), 256))
    packed = encode_batches(model, batches)
    return Codes(packed, np.arange(len(packed)), int(model.lengths[-1]), {}).codes()


def _model_rows(loss: str, nested: str, variants: Sequence[str], lengths: Sequence[int]) -> list[tuple[str, int]]:
    """(model_id, bits) per figure row: at each length the nested model, then its baseline."""
    rows = []
    for bits in lengths:
        rows.append((f"{loss}-{nested}", bits))
        if f"baseline-{bits}" in variants:
            rows.append((f"{loss}-baseline-{bits}", bits))
    return rows


def collect_examples(
    models_dir: str | os.PathLike,
    manifest: str | os.PathLike,
    losses: Sequence[str],
    variants: Sequence[str],
    nested: str = "nhl-full",
    queries: int = 3,
    seed: int = 0,
    topk: int = 10,
    features: str | os.PathLike | None = None,
) -> Examples:
    """Top-`topk` hits of `queries` seeded query items for each loss's nested model and baselines.

    A model file that does not exist is reported as missing (its rows are left out); the nested
    model's lengths decide the rows. Reads `models_dir/<loss>/<loss>-<variant>.pt` and the manifest.
    A model trained on a frozen backbone is encoded from the cached `features` (the features
    stage's directory) when given, as `evaluate` does: the same codes, without the backbone's cost.
    """
    from nhl.data.dataset import load_split
    from nhl.index import HashIndex
    from nhl.layout import model_file
    from nhl.models.hasher import load_hasher

    if nested not in variants:
        raise ValueError(f"report.examples.variant: {nested!r} is not one of models.variants {list(variants)}")
    if topk < 1:
        raise ValueError(f"report.examples.topk: expected a positive count, got {topk}")
    models_dir = Path(models_dir)
    datasets: dict[tuple[Any, ...], Any] = {}  # (split, channels) -> images; (split, "features", spec...) -> cache

    def split(name: str, channels: int):
        if (name, channels) not in datasets:
            datasets[name, channels] = load_split(manifest, name, channels=channels)
        return datasets[name, channels]

    def load_model(path: Path) -> tuple[Any, dict[str, Any]]:
        model, extra = load_hasher(path)
        return model.eval(), {
            "lengths": model.lengths,
            "frozen": bool((extra.get("config") or {}).get("freeze_backbone")),
        }

    def encoded_from(name: str, model: Any, frozen: bool) -> Any:
        """What the model encodes: the cached features of a frozen backbone, else the images."""
        if features is None or not frozen:
            return split(name, model.spec.in_channels)
        from nhl.features import load_features

        spec = model.spec
        key = (name, "features", spec.backbone, repr(sorted(spec.backbone_kwargs.items())), spec.input_size)
        if key not in datasets:
            expect = {
                "backbone": spec.backbone,
                "backbone_params": dict(spec.backbone_kwargs),
                "input_size": spec.input_size,
            }
            datasets[key] = load_features(features, manifest, name, expect)
        return datasets[key]

    data: dict[str, Any] = {"topk": topk, "seed": seed, "nested": nested, "losses": {}}
    thumbs: dict[int, np.ndarray] = {}
    chosen: list[int] | None = None
    for loss in losses:
        path = model_file(models_dir, f"{loss}-{nested}")
        if not path.is_file():
            data["losses"][loss] = {"queries": [], "rows": [], "missing": [path.stem]}
            continue
        nested_model, info = load_model(path)
        lengths = [int(k) for k in info["lengths"]]
        query_set = split("query", nested_model.spec.in_channels)
        if chosen is None:
            chosen = pick_queries(query_set.item_ids, queries, seed)
        q_labels_all = query_set.labels.numpy()
        entry: dict[str, Any] = {
            "lengths": lengths,
            "rows": [],
            "missing": [],
            "queries": [
                {"id": i, "labels": [int(c) for c in np.flatnonzero(q_labels_all[_row_of(query_set, i)])]}
                for i in chosen
            ],
        }
        loaded = {path.stem: (nested_model, info["frozen"])}
        db_codes: dict[str, np.ndarray] = {}
        for model_id, bits in _model_rows(loss, nested, variants, lengths):
            if model_id not in loaded:
                file = model_file(models_dir, model_id)
                if not file.is_file():
                    entry["missing"].append(model_id)
                    continue
                loaded_model, loaded_info = load_model(file)
                loaded[model_id] = (loaded_model, loaded_info["frozen"])
            model, frozen = loaded[model_id]
            query_set, db_set = split("query", model.spec.in_channels), split("database", model.spec.in_channels)
            q_rows = [_row_of(query_set, i) for i in chosen]
            if model_id not in db_codes:  # the database once per model
                db_codes[model_id] = _encode(model, encoded_from("database", model, frozen))
            if bits > db_codes[model_id].shape[1]:
                entry["missing"].append(f"{model_id} at {bits} bits")
                continue
            q_codes = _encode(model, encoded_from("query", model, frozen), q_rows)
            index = HashIndex(bits, "flat").add(db_codes[model_id][:, :bits])
            distances, found = index.search(np.ascontiguousarray(q_codes[:, :bits]), min(topk, len(db_set)))
            q_labels, db_labels = query_set.labels.numpy()[q_rows], db_set.labels.numpy()
            for qi, item in enumerate(chosen):
                hits = [
                    {
                        "id": int(db_set.item_ids[r]),
                        "distance": int(d),
                        "relevant": bool(float(q_labels[qi] @ db_labels[r]) > 0),
                    }
                    for r, d in zip(found[qi], distances[qi], strict=True)
                    if r >= 0
                ]
                entry["rows"].append({"query": item, "model_id": model_id, "bits": bits, "hits": hits})
                for r in found[qi]:
                    if r >= 0 and int(db_set.item_ids[r]) not in thumbs:
                        thumbs[int(db_set.item_ids[r])] = _pixels(db_set, int(r))
                thumbs.setdefault(int(item), _pixels(query_set, q_rows[qi]))
        data["losses"][loss] = entry
    return Examples(data, thumbs)


def _row_of(dataset: Any, item_id: int) -> int:
    return int(np.flatnonzero(dataset.item_ids == item_id)[0])


def _pixels(dataset: Any, row: int) -> np.ndarray:
    """uint8 RGB `[TILE, TILE, 3]` thumbnail of a dataset item."""
    from PIL import Image

    image = (dataset[row][0].clamp(0, 1) * 255).round().numpy().astype(np.uint8)
    image = image[0] if image.shape[0] == 1 else image.transpose(1, 2, 0)
    return np.asarray(Image.fromarray(image).convert("RGB").resize((TILE, TILE), Image.Resampling.NEAREST))


def _framed(tile: np.ndarray, colour: tuple[int, int, int], dashed: bool, width: int = 3) -> np.ndarray:
    """The tile inside a frame; a dashed frame alternates colour and white every 4 pixels."""
    side = tile.shape[0] + 2 * width
    out = np.empty((side, side, 3), dtype=np.uint8)
    out[:] = colour
    if dashed:
        stripes = (np.arange(side) // 4) % 2 == 1
        out[:width, stripes] = out[-width:, stripes] = 255
        out[stripes, :width] = out[stripes, -width:] = 255
    out[width:-width, width:-width] = tile
    return out


def draw_retrieval(path: Path, loss: str, entry: dict[str, Any], thumbs: dict[int, np.ndarray]) -> bool:
    """One grid for `loss`: per query a block of rows (model, bits), query then its top-k hits."""
    from nhl.report.plots import new_figure

    rows = entry.get("rows") or []
    if not rows:
        return False
    topk = max(len(r["hits"]) for r in rows)
    cell, gap, label_px = TILE + 6, 4, 170
    order = [(q["id"], [r for r in rows if r["query"] == q["id"]]) for q in entry["queries"]]
    n_rows = sum(len(block) for _, block in order) + len(order) - 1  # a spacer row between blocks
    width = label_px + (topk + 1) * (cell + gap) + gap
    height = n_rows * (cell + gap) + gap
    canvas = np.full((height, width, 3), 255, dtype=np.uint8)
    labels, y = [], gap
    for qi, (query, block) in enumerate(order):
        for ri, row in enumerate(block):
            x = label_px
            if ri == 0:
                canvas[y : y + cell, x : x + cell] = _framed(thumbs[query], (40, 40, 40), False)
            x += cell + 2 * gap
            for hit in row["hits"]:
                colour = _UNKNOWN if hit.get("relevant") is None else (_RELEVANT if hit["relevant"] else _IRRELEVANT)
                canvas[y : y + cell, x : x + cell] = _framed(thumbs[hit["id"]], colour, hit.get("relevant") is False)
                x += cell + gap
            name = row["model_id"][len(loss) + 1 :]
            good = sum(bool(h.get("relevant")) for h in row["hits"])
            labels.append(
                (
                    y + cell / 2,
                    f"{name} @ {row['bits']} bits ({good}/{len(row['hits'])})",
                    f"query {query}" if ri == 0 else None,
                )
            )
            y += cell + gap
        y += cell + gap if qi < len(order) - 1 else 0
    scale = 2
    fig = new_figure(width * scale / 110, (height * scale + 60) / 110)
    ax = fig.add_subplot()
    ax.imshow(canvas, interpolation="nearest")
    ax.set_axis_off()
    for yc, text, query_label in labels:
        ax.text(label_px - 8, yc, text, ha="right", va="center", fontsize=7)
        if query_label:
            ax.text(label_px + cell / 2, yc - cell / 2 - 1, query_label, ha="center", va="bottom", fontsize=6)
    ax.set_title(
        f"{loss}: top-{topk} retrieved per code length (green: relevant, dashed red: not relevant)", fontsize=9
    )
    fig.savefig(path)
    return True
