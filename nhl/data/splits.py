"""Seeded split protocols: which items become query, train, val and database.

A protocol draws `query` items, then `train` and `val` items from what is left (per class, or as
fixed totals for multi-label data, where every label is made to appear in train); the database
is the rest, plus train and val when `train_in_database`. Val is carved out of the training pool
for early stopping and model selection; the query set is never used for either. Query items
appear in no other split. The same source, protocol and seed always give the same split.

Protocols with `query_group`/`pool_group` draw the query set from one group of the source
(CIFAR-10's test batch, ImageNet-100's validation list) and everything else from another.

| protocol | unit | query | train | val | database | literature |
|---|---|---|---|---|---|---|
| `cifar10` | per class | 100 | 450 | 50 | rest (54,000) | 1k query / 5k train / 54k database |
| `cifar10-1` | per class | 100 | 450 | 50 | rest + train + val (59,000) | database includes train |
| `cifar10-2` | per class | 1,000 from group `test` | 4,500 from `train` | 500 from `train` | group `train` (50,000) | 10k query / 50k train = database |
| `nuswide21` | total | 2,100 | 9,450 | 1,050 | rest + train + val (N - 2,100) | 2,100 query / 10,500 train |
| `coco` | total | 5,000 | 9,000 | 1,000 | rest + train + val (N - 5,000) | 5k query / 10k train |
| `imagenet100` | per class | 50 from group `query` | 117 from `database` | 13 from `database` | group `database` | 5k query / 13k train / own database list |
| `mnist5k` | per class | 50 | 200 | 20 | rest (2,300) | scaled-down default |
| `digits` | per class | 10 | 50 | 10 | rest (1,097) | tiny, for tests |
| `custom` | per class, or totals with `per_class: false` | yours | yours | yours | rest | your own images |

`custom` is the protocol for one's own data: the counts come from params (`data.query`, `train`,
`val`, `per_class`), and counts the data cannot satisfy (most often: a class smaller than the
per-class counts) are refused up front with a one-line error naming the class.

Train + val always add up to the literature's training set, so the query and database sets match it.
"""  # noqa: E501 - the protocol table above keeps one Markdown row a line

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import pandas as pd

from nhl.data.manifest import SPLITS, labels_to_strings
from nhl.data.sources import SourceData

COUNT_FIELDS: tuple[str, ...] = ("query", "train", "val")


@dataclass(frozen=True)
class Protocol:
    """Counts and rules of one split protocol (see the module table)."""

    name: str
    query: int
    train: int
    val: int
    per_class: bool = True
    train_in_database: bool = False
    query_group: str | None = None
    pool_group: str | None = None
    summary: str = ""

    def __post_init__(self) -> None:
        for field_name in COUNT_FIELDS:
            value = getattr(self, field_name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
                raise ValueError(f"protocol {self.name}: {field_name} must be a positive integer, got {value!r}")
        if (self.query_group is None) != (self.pool_group is None) or (
            self.query_group is not None and self.query_group == self.pool_group
        ):
            raise ValueError(f"protocol {self.name}: query_group and pool_group are both unset or two different groups")

    def with_counts(self, **changes) -> Protocol:
        """A copy with some fields changed (e.g. `query=`, `train=`, `train_in_database=`)."""
        unknown = sorted(set(changes) - {f.name for f in dataclasses.fields(self)})
        if unknown:
            raise ValueError(f"protocol {self.name}: unknown fields {unknown}")
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def check_feasible(self, source: SourceData) -> None:
        """Refuse counts `source` cannot satisfy before drawing (the drawing itself also checks)."""

    def expected_sizes(self, num_classes: int, group_sizes: dict[str, int]) -> dict[str, int]:
        """Split sizes this protocol gives on a source with these group sizes (checked by the gate)."""
        scale = num_classes if self.per_class else 1
        sizes = {name: getattr(self, name) * scale for name in COUNT_FIELDS}
        if self.pool_group is None:
            rest = sum(group_sizes.values()) - sum(sizes.values())
        else:
            rest = group_sizes.get(self.pool_group, 0) - sizes["train"] - sizes["val"]
        extra = sizes["train"] + sizes["val"] if self.train_in_database else 0
        return {**sizes, "database": rest + extra}


PROTOCOLS: dict[str, Protocol] = {}


def register_protocol(protocol: Protocol) -> Protocol:
    """Add a protocol to `PROTOCOLS` under its name."""
    if protocol.name in PROTOCOLS:
        raise ValueError(f"protocol {protocol.name!r} is registered twice")
    PROTOCOLS[protocol.name] = protocol
    return protocol


def get_protocol(name: str) -> Protocol:
    """The registered protocol `name`; unknown names list the known ones."""
    if name not in PROTOCOLS:
        raise ValueError(f"unknown protocol {name!r}; known protocols: {', '.join(sorted(PROTOCOLS))}")
    return PROTOCOLS[name]


register_protocol(
    Protocol(
        "cifar10",
        100,
        450,
        50,
        summary="CIFAR-10: 1k query, 5k train (4.5k + 0.5k val), 54k database",
    )
)
register_protocol(
    Protocol(
        "cifar10-1",
        100,
        450,
        50,
        train_in_database=True,
        summary="CIFAR-10: database = rest + train (59k)",
    )
)
register_protocol(
    Protocol(
        "cifar10-2",
        1000,
        4500,
        500,
        train_in_database=True,
        query_group="test",
        pool_group="train",
        summary="CIFAR-10: query = the 10k test batch, train = database = the 50k training batches",
    )
)
register_protocol(
    Protocol(
        "nuswide21",
        2100,
        9450,
        1050,
        per_class=False,
        train_in_database=True,
        summary="NUS-WIDE (21 labels): 2,100 query, 10,500 train (9,450 + 1,050 val), database = all but query",
    )
)
register_protocol(
    Protocol(
        "coco",
        5000,
        9000,
        1000,
        per_class=False,
        train_in_database=True,
        summary="MS-COCO (80 labels): 5k query, 10k train (9k + 1k val), database = all but query",
    )
)
register_protocol(
    Protocol(
        "imagenet100",
        50,
        117,
        13,
        train_in_database=True,
        query_group="query",
        pool_group="database",
        summary="ImageNet-100: query = the 5k validation list, 13k train from the database list, database = that list",
    )
)
register_protocol(Protocol("mnist5k", 50, 200, 20, summary="mnist5k: 500 query, 2,000 train, 200 val, 2,300 database"))
register_protocol(Protocol("digits", 10, 50, 10, summary="digits: 100 query, 500 train, 100 val, 1,097 database"))


@dataclass(frozen=True)
class CustomProtocol(Protocol):
    """A protocol whose counts are the user's: checked against the data before anything is drawn."""

    def check_feasible(self, source: SourceData) -> None:
        need = self.query + self.train + self.val
        wanted = f"query {self.query} + train {self.train} + val {self.val}"
        if not self.per_class:
            if len(source) < need:
                raise ValueError(
                    f"protocol {self.name}: {len(source)} items, fewer than {need} ({wanted}); "
                    f"lower data.query/train/val or add images"
                )
            return
        multi = np.flatnonzero(source.labels.sum(axis=1) != 1)
        if len(multi):
            raise ValueError(
                f"protocol {self.name} with per_class: true needs single-label data; item "
                f"{multi[0]} has {int(source.labels[multi[0]].sum())} labels (set data.per_class: false)"
            )
        sizes = source.labels.sum(axis=0).astype(int)
        small = np.flatnonzero(sizes < need)
        if len(small):
            c = int(small[0])
            more = f" ({len(small) - 1} more classes too small)" if len(small) > 1 else ""
            raise ValueError(
                f"protocol {self.name}: class {c} ({source.class_names[c]!r}) has {sizes[c]} items, "
                f"fewer than {need} per class ({wanted}){more}; lower data.query/train/val or add images"
            )


register_protocol(
    CustomProtocol(
        "custom",
        10,
        50,
        10,
        summary="your own data: the counts set in params (per class, or totals with per_class: false)",
    )
)


def make_split(source: SourceData, protocol: Protocol, seed: int) -> tuple[pd.DataFrame, dict]:
    """Split `source` by `protocol` with `seed`: (manifest frame, meta for `manifest.json`).

    Rows are ordered train, val, query, database, each by item id, so a position within a split
    does not depend on the sampling order. Raises ValueError when the source is too small.
    """
    protocol.check_feasible(source)
    rng = np.random.default_rng(seed)
    groups = source.groups if source.groups is not None else np.full(len(source), "all")
    if protocol.query_group is None:
        query_pool = pool = np.arange(len(source))
    else:
        query_pool = _group_members(source, groups, protocol, protocol.query_group)
        pool = _group_members(source, groups, protocol, protocol.pool_group)
    query = _draw(source.labels, query_pool, {"query": protocol.query}, rng, protocol, cover=False)["query"]
    pool = np.setdiff1d(pool, query)
    picked = _draw(source.labels, pool, {"train": protocol.train, "val": protocol.val}, rng, protocol, cover=True)
    rest = np.setdiff1d(pool, np.concatenate([picked["train"], picked["val"]]))
    database = np.concatenate([rest, picked["train"], picked["val"]]) if protocol.train_in_database else rest
    members = {"train": picked["train"], "val": picked["val"], "query": query, "database": database}
    frame = _frame(source, members)
    meta = {
        "dataset": source.name,
        "protocol": protocol.name,
        "protocol_spec": protocol.to_dict(),
        "seed": int(seed),
        "num_classes": source.num_classes,
        "class_names": list(source.class_names),
        "multi_label": bool((source.labels.sum(axis=1) > 1).any()),
        "location": "row" if source.kind == "memory" else "path",
        "root": source.root,
        "group_sizes": source.group_sizes(),
        "image_shape": list(source.images.shape[1:]) if source.images is not None else None,
        "sizes": {s: int(len(members[s])) for s in SPLITS},
        "missing": list(source.missing),
        "channels": source.channels,
        "resize": source.image_size,
        "images_hash": source.images_hash,
    }
    return frame, meta


def _group_members(source: SourceData, groups: np.ndarray, protocol: Protocol, group: str | None) -> np.ndarray:
    members = np.flatnonzero(groups == group)
    if len(members) == 0:
        raise ValueError(
            f"protocol {protocol.name} draws from group {group!r}, but source {source.name} has groups "
            f"{sorted(source.group_sizes())}"
        )
    return members


def _draw(labels, pool, counts, rng, protocol, cover) -> dict[str, np.ndarray]:
    """Draw `counts` (name -> count, dealt out in order) from `pool`. Per-class draws hold every
    class by construction; for totals, `cover` makes the first count hold every label."""
    if protocol.per_class:
        return _draw_per_class(labels, pool, counts, rng, protocol)
    return _draw_totals(labels, pool, counts, rng, protocol, cover)


def _draw_per_class(labels, pool, counts, rng, protocol) -> dict[str, np.ndarray]:
    """Per class, a random `sum(counts)` items of `pool`, dealt out in the order of `counts`."""
    multi = np.flatnonzero(labels[pool].sum(axis=1) != 1)
    if len(multi):
        raise ValueError(
            f"protocol {protocol.name} draws per class and needs single-label data; "
            f"item {pool[multi[0]]} has {int(labels[pool[multi[0]]].sum())} labels"
        )
    classes = labels[pool].argmax(axis=1)
    need = sum(counts.values())
    # group the pool by class once (a stable sort), not one scan of the pool per class: linear in
    # the pool for 10,000+ classes
    order = np.argsort(classes, kind="stable")
    bounds = np.searchsorted(classes[order], np.arange(labels.shape[1] + 1))
    sizes = np.diff(bounds)
    short = np.flatnonzero(sizes < need)
    if len(short):
        wanted = " + ".join(f"{name} {n}" for name, n in counts.items())
        c = int(short[0])
        raise ValueError(
            f"protocol {protocol.name}: class {c} has {int(sizes[c])} items available, needs {need} ({wanted})"
            + (f"; {len(short)} classes are short" if len(short) > 1 else "")
        )
    out: dict[str, list[np.ndarray]] = {name: [] for name in counts}
    for c in range(labels.shape[1]):
        members = pool[order[bounds[c] : bounds[c + 1]]]
        chosen = rng.permutation(members)[:need]
        start = 0
        for name, n in counts.items():
            out[name].append(chosen[start : start + n])
            start += n
    return {name: np.sort(np.concatenate(parts)) for name, parts in out.items()}


def _draw_totals(labels, pool, counts, rng, protocol, cover) -> dict[str, np.ndarray]:
    """A random `sum(counts)` items of `pool`; with `cover`, the first count holds every label."""
    need = sum(counts.values())
    if len(pool) < need:
        wanted = " + ".join(f"{name} {n}" for name, n in counts.items())
        raise ValueError(f"protocol {protocol.name}: {len(pool)} items available, needs {need} ({wanted})")
    order = rng.permutation(pool)
    first = next(iter(counts))
    if cover:
        order = _covering_first(labels, order, counts[first], protocol)
    out, start = {}, 0
    for name, n in counts.items():
        out[name] = np.sort(order[start : start + n])
        start += n
    return out


def _covering_first(labels: np.ndarray, order: np.ndarray, n: int, protocol: Protocol) -> np.ndarray:
    """Reorder `order` so its first `n` items hold every label: for each label not yet covered,
    the earliest item (in the random order) carrying it is moved to the front."""
    ordered = labels[order] > 0
    chosen: list[int] = []
    covered = np.zeros(labels.shape[1], dtype=bool)
    for c in range(labels.shape[1]):
        if covered[c]:
            continue
        carriers = np.flatnonzero(ordered[:, c])
        if len(carriers) == 0:
            raise ValueError(f"protocol {protocol.name}: label {c} has no item outside the query set to train on")
        chosen.append(int(carriers[0]))
        covered |= ordered[carriers[0]]
    if len(chosen) > n:
        raise ValueError(
            f"protocol {protocol.name}: train {n} is fewer than the {len(chosen)} items needed to cover every label"
        )
    front = np.zeros(len(order), dtype=bool)
    front[chosen] = True
    return np.concatenate([order[front], order[~front]])


def _frame(source: SourceData, members: dict[str, np.ndarray]) -> pd.DataFrame:
    label_strings = np.asarray(labels_to_strings(source.labels), dtype=object)
    parts = []
    for split in SPLITS:
        ids = np.sort(members[split])
        location = {"row": ids} if source.kind == "memory" else {"path": np.asarray(source.paths, dtype=object)[ids]}
        parts.append(pd.DataFrame({"item_id": ids, **location, "labels": label_strings[ids], "split": split}))
    return pd.concat(parts, ignore_index=True)
