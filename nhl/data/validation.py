"""The validation gate: Great Expectations suites over a split manifest.

`validate_manifest(directory)` reads `manifest.csv` + `manifest.json`, derives with pandas the
columns that need more than one row to judge (query leakage, id consistency, label range, file
existence, per-split sizes, a decoded sample of images) and lets Great Expectations judge every
check, so the result lists each expectation with its success. The checks: schema, no empty
values, label indices in range, every class present in train/val/query (per-class protocols) or
every label in train (fixed totals), split sizes as the recorded protocol says, no query item in
another split, item ids unique within a split and naming one image, images exist and a sample
decodes to the expected shape, and the CSV matches its recorded content hash.

It never raises on a failed check: `ValidationResult.success` and `.message()` say what failed;
`nhl.data.audit.write_report` writes `result.json` and `audit.md`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from nhl.data.manifest import CSV_NAME, SPLITS, content_hash, read_manifest
from nhl.data.splits import Protocol

REQUIRED_META = ("dataset", "protocol", "protocol_spec", "seed", "num_classes", "group_sizes", "content_hash")
LABELS_PATTERN = r"^\d+(?: \d+)*$"


@dataclass
class ValidationResult:
    """Every check (suite, check, expectation, success, observed) plus a summary of the manifest."""

    checks: list[dict]
    summary: dict
    class_counts: dict[str, list[int]] = field(default_factory=dict)

    @property
    def success(self) -> bool:
        return all(check["success"] for check in self.checks)

    @property
    def failed(self) -> list[dict]:
        return [check for check in self.checks if not check["success"]]

    def message(self) -> str:
        """One line: passed, or which checks failed and what was observed."""
        if self.success:
            return f"manifest validation passed: {len(self.checks)} checks"
        parts = [f"{c['check']} ({c['observed']})" for c in self.failed]
        return f"manifest validation failed {len(parts)} of {len(self.checks)} checks: " + "; ".join(parts)

    def to_dict(self) -> dict:
        return {
            "success": self.success,
            "failed": [c["check"] for c in self.failed],
            **self.summary,
            "class_counts": self.class_counts,
            "checks": self.checks,
        }


def validate_manifest(
    directory: str | Path,
    images: str | Path | None = None,
    sample: int = 16,
    expected_shape: tuple[int, ...] | None = None,
    seed: int = 0,
    cache_file: str | Path | None = None,
) -> ValidationResult:
    """Run the gate on the manifest in `directory`.

    `images` is the raw directory holding `images.npy` (manifests with `row`) or the image root
    (manifests with `path`); by default the `raw_dir` / `root` recorded in `manifest.json`.
    `sample` images, drawn with `seed`, are decoded and compared with `expected_shape` (by
    default the recorded `image_shape`; unchecked when neither is known).
    File manifests (`path`) have every image checked instead of a sample: it lies inside the
    root, decodes to RGB, and its declared size is within the pixel limit; each file's result is
    cached in `cache_file` under its content hash, so a rerun decodes only changed images.
    Raises only when there is nothing to validate (no manifest, unreadable or incomplete meta).
    """
    directory = Path(directory)
    frame, meta = read_manifest(directory)
    absent = [key for key in REQUIRED_META if key not in meta]
    if absent:
        raise ValueError(f"{directory / 'manifest.json'} lacks keys {absent}")
    num_classes = int(meta["num_classes"])
    protocol = Protocol(**meta["protocol_spec"])
    location = "path" if "path" in frame.columns else "row"
    images = Path(images) if images is not None else _recorded_images(meta, location)
    shape = expected_shape if expected_shape is not None else meta.get("image_shape")

    parsed = [_parse_labels(text) for text in frame["labels"]]
    items, where = _item_frame(frame, location, parsed, images)
    labels = _label_frame(frame, parsed)
    expected = protocol.expected_sizes(num_classes, meta["group_sizes"])
    counts = frame["split"].value_counts()
    sizes = pd.DataFrame({"split": list(SPLITS), "count": [int(counts.get(s, 0)) for s in SPLITS]})
    stats = None
    if location == "path":
        from nhl.data.imagecheck import check_images

        checked, stats = check_images(images, frame["path"], str(directory / CSV_NAME), cache_file)
        samples = checked[checked["exists"]].assign(
            shape=lambda f: [_shape_text(h, w, m) for h, w, m in zip(f["height"], f["width"], f["mode"], strict=True)]
        )
    else:
        samples = _sample_frame(items, location, images, sample, seed)
    observed_hash = content_hash((directory / CSV_NAME).read_bytes(), meta.get("images_hash"))
    batches = {
        "schema": frame,
        "items": items,
        "labels": labels,
        "sizes": sizes,
        "images": samples,
        "integrity": pd.DataFrame({"content_hash": [observed_hash]}),
    }
    names = {
        "location": location,
        "where": where,
        "classes": num_classes,
        "class_word": "label" if meta.get("multi_label") else "class",
        "class_splits": ("train", "val", "query") if protocol.per_class else ("train",),
        "protocol": protocol.name,
        "expected": expected,
        "samples": len(samples),
        "every_image": location == "path",
        "shape": "x".join(str(s) for s in shape) if shape else None,
        "content_hash": meta["content_hash"],
    }
    checks = _run_suites(_suites(names), batches)
    summary = {
        "manifest_dir": str(directory),
        "dataset": meta["dataset"],
        "protocol": meta["protocol"],
        "seed": meta["seed"],
        "content_hash": meta["content_hash"],
        "observed_hash": observed_hash,
        "num_classes": num_classes,
        "multi_label": bool(meta.get("multi_label")),
        "sizes": dict(zip(sizes["split"], sizes["count"].astype(int).tolist(), strict=True)),
        "expected_sizes": expected,
        "missing_images": {"count": len(meta.get("missing", [])), "paths": list(meta.get("missing", []))},
    }
    if stats is not None:
        summary["image_checks"] = {"files": len(samples), "decoded": stats.decoded, "cached": stats.cached}
    return ValidationResult(checks, summary, _class_counts(labels, num_classes))


def _suites(n: dict) -> dict[str, list[tuple[str, object]]]:
    """Suite name -> [(check described in words, expectation)]; each suite runs on the frame of
    the same name built in `validate_manifest`.

    Per-class protocols promise every class in train, val and query; protocols with fixed totals
    (multi-label data) promise every label in train.
    """
    import great_expectations.expectations as gxe
    from great_expectations.expectations.row_conditions import Column

    location, top, expected = n["location"], n["classes"] - 1, n["expected"]
    columns = ["item_id", location, "labels", "split"]
    return {
        "schema": [
            (
                f"columns are {', '.join(columns)}",
                gxe.ExpectTableColumnsToMatchSet(column_set=columns, exact_match=True),
            ),
            *[(f"no empty {column}", gxe.ExpectColumnValuesToNotBeNull(column=column)) for column in columns],
            (
                "item_id is an integer column",
                gxe.ExpectColumnValuesToBeInTypeList(column="item_id", type_list=["int64", "int32"]),
            ),
            (
                "split is one of train/val/query/database",
                gxe.ExpectColumnValuesToBeInSet(column="split", value_set=list(SPLITS)),
            ),
            (
                "labels are space-separated label indices",
                gxe.ExpectColumnValuesToMatchRegex(column="labels", regex=LABELS_PATTERN),
            ),
        ],
        "items": [
            (
                f"label indices within 0..{top}",
                gxe.ExpectColumnValuesToBeBetween(column="label_max", min_value=0, max_value=top),
            ),
            (
                "item ids unique within each split",
                gxe.ExpectCompoundColumnsToBeUnique(column_list=["split", "item_id"]),
            ),
            ("no query item in another split", gxe.ExpectColumnValuesToBeInSet(column="query_leak", value_set=[False])),
            (
                "each item id names one image and one label set",
                gxe.ExpectColumnValuesToBeInSet(column="id_conflict", value_set=[False]),
            ),
            (f"images exist ({n['where']})", gxe.ExpectColumnValuesToBeInSet(column="image_exists", value_set=[True])),
        ],
        "labels": [
            (
                f"every {n['class_word']} present in {split}",
                gxe.ExpectColumnDistinctValuesToContainSet(
                    column="label", value_set=list(range(n["classes"])), row_condition=Column("split") == split
                ),
            )
            for split in n["class_splits"]
        ],
        "sizes": [
            (
                f"{split} has {expected[split]} rows as protocol {n['protocol']} says",
                gxe.ExpectColumnValuesToBeBetween(
                    column="count",
                    min_value=expected[split],
                    max_value=expected[split],
                    row_condition=Column("split") == split,
                ),
            )
            for split in SPLITS
        ],
        "images": [
            (
                f"every image decodes, within the root and the pixel limit ({n['samples']} files)",
                gxe.ExpectColumnValuesToBeInSet(column="problem", value_set=[""]),
            ),
            *(
                [
                    (
                        "sampled images have shape " + n["shape"],
                        gxe.ExpectColumnValuesToBeInSet(column="shape", value_set=[n["shape"]]),
                    )
                ]
                if n["shape"]
                else []
            ),
        ]
        if n["every_image"]
        else [
            (
                f"a sample of {n['samples']} images decodes",
                gxe.ExpectColumnValuesToBeInSet(column="decoded", value_set=[True]),
            ),
            *(
                [
                    (
                        f"sampled images have shape {n['shape']}",
                        gxe.ExpectColumnValuesToBeInSet(column="shape", value_set=[n["shape"]]),
                    )
                ]
                if n["shape"]
                else []
            ),
        ],
        "integrity": [
            (
                "content hash matches manifest.json",
                gxe.ExpectColumnValuesToBeInSet(column="content_hash", value_set=[n["content_hash"]]),
            ),
        ],
    }


def _run_suites(suites: dict[str, list], batches: dict[str, pd.DataFrame]) -> list[dict]:
    """Run each suite on its frame in one ephemeral Great Expectations context; one record per check."""
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    source = context.data_sources.add_pandas(name="nhl")
    checks: list[dict] = []
    for name, expectations in suites.items():
        batch = source.add_dataframe_asset(name=name).add_batch_definition_whole_dataframe("whole")
        suite = context.suites.add(gx.ExpectationSuite(name=name))
        for _, expectation in expectations:
            suite.add_expectation(expectation)
        definition = context.validation_definitions.add(gx.ValidationDefinition(name=name, data=batch, suite=suite))
        outcome = definition.run(batch_parameters={"dataframe": batches[name]})
        by_id = {result.expectation_config.id: result for result in outcome.results if result.expectation_config}
        checks += [_check_record(name, check, by_id[expectation.id]) for check, expectation in expectations]
    return checks


def _recorded_images(meta: dict, location: str) -> Path:
    key = "raw_dir" if location == "row" else "root"
    if not meta.get(key):
        raise ValueError(f"manifest.json records no {key}; pass the image location explicitly")
    return Path(meta[key])


def _parse_labels(text) -> list[int] | None:
    if not isinstance(text, str):
        return None
    tokens = text.split()
    if not tokens or not all(t.isdigit() for t in tokens):
        return None
    return [int(t) for t in tokens]


def _item_frame(frame: pd.DataFrame, location: str, parsed: list, images: Path) -> tuple[pd.DataFrame, str]:
    """item_id, split, location and derived columns (label_max, query_leak, id_conflict,
    image_exists), and a description of where the images were looked for."""
    items = frame[["item_id", "split", location]].copy()
    items["label_max"] = [max(p) if p else np.nan for p in parsed]
    splits_per_item = frame.groupby("item_id")["split"].transform("nunique")
    in_query = frame["item_id"].isin(frame.loc[frame["split"] == "query", "item_id"])
    items["query_leak"] = in_query & (splits_per_item > 1)
    key = frame[location].astype(str) + "|" + frame["labels"].astype(str)
    items["id_conflict"] = (key.groupby(frame["item_id"]).transform("nunique") > 1) | (
        frame["item_id"].groupby(frame[location].astype(str)).transform("nunique") > 1
    )
    if location == "row":
        path = images / "images.npy"
        num_rows = len(np.load(path, mmap_mode="r")) if path.is_file() else 0
        rows = pd.to_numeric(frame["row"], errors="coerce")
        items["image_exists"] = (rows >= 0) & (rows < num_rows) & (rows == rows.round())
        return items, f"rows 0..{num_rows - 1} of {path}"
    exists = {p: isinstance(p, str) and (images / p).is_file() for p in frame["path"].unique()}
    items["image_exists"] = frame["path"].map(exists).astype(bool)
    return items, f"files under {images}"


def _label_frame(frame: pd.DataFrame, parsed: list) -> pd.DataFrame:
    """One row per (item, label) with parseable labels: split, label."""
    splits = [s for s, p in zip(frame["split"], parsed, strict=True) if p for _ in p]
    labels = [label for p in parsed if p for label in p]
    return pd.DataFrame({"split": pd.Series(splits, dtype=object), "label": pd.Series(labels, dtype="int64")})


def _sample_frame(items: pd.DataFrame, location: str, images: Path, sample: int, seed: int) -> pd.DataFrame:
    """Decode `sample` distinct images (seeded) among those that exist: item_id, decoded, shape."""
    candidates = items[items["image_exists"]].drop_duplicates(subset=[location])
    rng = np.random.default_rng(seed)
    chosen = candidates.iloc[np.sort(rng.permutation(len(candidates))[: max(sample, 0)])]
    array = np.load(images / "images.npy", mmap_mode="r") if location == "row" and len(chosen) else None
    decoded, shapes = [], []
    for value in chosen[location]:
        try:
            pixels = np.asarray(array[int(value)]) if array is not None else _decode_file(images / value)
            decoded.append(True)
            shapes.append("x".join(str(s) for s in pixels.shape))
        except (OSError, ValueError) as err:
            decoded.append(False)
            shapes.append(f"error: {err}")
    return pd.DataFrame({"item_id": chosen["item_id"].to_numpy(), "decoded": decoded, "shape": shapes})


def _shape_text(height: int, width: int, mode: str) -> str:
    """'HxW' or 'HxWxC' as numpy gives the decoded image (before any conversion)."""
    from PIL import Image

    if not mode:
        return "unreadable"
    bands = Image.getmodebands(mode)
    return f"{height}x{width}" if bands == 1 else f"{height}x{width}x{bands}"


def _decode_file(path: Path) -> np.ndarray:
    from nhl.images import open_image

    with open_image(path) as image:  # refuses an image over the pixel limit before decoding
        image.load()
        return np.asarray(image)


def _class_counts(long: pd.DataFrame, num_classes: int) -> dict[str, list[int]]:
    counts = {}
    for split in SPLITS:
        labels = long.loc[long["split"] == split, "label"].to_numpy()
        labels = labels[(labels >= 0) & (labels < num_classes)]
        counts[split] = np.bincount(labels, minlength=num_classes).astype(int).tolist()
    return counts


def _check_record(suite: str, check: str, result) -> dict:
    """A JSON-ready record of one expectation's outcome with a short `observed` text."""
    info = result.to_json_dict()
    config = info["expectation_config"]
    details = info.get("result") or {}
    if details.get("unexpected_count") == 0:
        observed = "0 unexpected"
    elif "unexpected_count" in details:
        observed = f"{details['unexpected_count']} unexpected, e.g. {details.get('partial_unexpected_list', [])[:3]}"
    elif "missing_count" in details:
        observed = f"missing {details.get('partial_missing_list', [])[:10]}"
    else:
        observed = f"observed {details.get('observed_value')}"
    error = _exception_message(info.get("exception_info") or {})
    if error:
        observed = f"error: {error}"
    kwargs = {k: v for k, v in config["kwargs"].items() if k != "batch_id"}
    return {
        "suite": suite,
        "check": check,
        "expectation": config["type"],
        "kwargs": kwargs,
        "success": bool(info["success"]),
        "observed": observed,
    }


def _exception_message(info: dict) -> str | None:
    if info.get("raised_exception"):
        return str(info.get("exception_message"))
    for value in info.values():
        if isinstance(value, dict) and value.get("raised_exception"):
            return str(value.get("exception_message")).splitlines()[0]
    return None
