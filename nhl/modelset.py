"""Train and evaluate every variant of one loss in one process, redoing only what changed.

One process per loss instead of two per model saves each model the interpreter start, the torch
and MLflow imports, the MLflow store setup and DVC's per-stage bookkeeping (bench/pipeline_cost.py).
DVC reruns the whole per-loss stage when any of its inputs changes, so the stage keeps its
outputs between runs (`persist: true` in dvc.yaml) and decides per model with a fingerprint
stored beside the model file (`models/<loss>/<model_id>.json`, nhl.layout):

- `train`: SHA-256 of the model's resolved `TrainConfig`, the split manifest's files (and the
  cached features when the backbone is frozen) and the training code's files, with the MD5 of
  the model file it produced. A model is retrained only when the inputs differ, or its file is
  missing or is not the one trained from them (e.g. rewritten by `nhl train`).
- `evaluate`: SHA-256 of the evaluate settings, the model file, the manifest and the evaluation
  code. Its metrics, PR curve and history are rewritten only when it differs or one is missing.

Models of variants no longer listed are deleted with their files. Each trained model keeps its
own MLflow run (its id is in the model file and in its metrics record), and each file is tracked
by DVC inside its loss's folder. A fingerprint is written after the files it vouches for, so a
killed process leaves a model to redo, never a stale model taken for a fresh one.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nhl import atomic
from nhl.layout import loss_of, placed
from nhl.timing import phase

if TYPE_CHECKING:
    from nhl.training import TrainConfig


def file_digest(path: str | os.PathLike) -> str:
    """MD5 of a file's bytes (the hash DVC records for a file)."""
    digest = hashlib.md5()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def tree_digest(paths: Iterable[str | os.PathLike], root: str | os.PathLike = ".") -> str:
    """SHA-256 over the files under `paths` (files or folders, relative to `root` or absolute), by
    their path as given (a folder's files: the folder's path joined with theirs inside it) and their
    bytes; `__pycache__` and `.pyc` files are left out. A missing path counts as absent."""
    root = Path(root)
    digest = hashlib.sha256()
    for start in sorted(str(p) for p in paths):
        base = root / start
        files = [base] if base.is_file() else sorted(p for p in base.rglob("*") if p.is_file()) if base.is_dir() else []
        for path in files:
            if "__pycache__" in path.parts or path.suffix == ".pyc":
                continue
            name = Path(start) / path.relative_to(base)  # a file given itself: relative_to gives "."
            digest.update(str(name).encode() + b"\0" + file_digest(path).encode() + b"\0")
    return digest.hexdigest()


def _sha(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


def train_fingerprint(config: TrainConfig, data: str, code: str) -> str:
    """What a model file depends on: its resolved settings, the data digest and the code digest."""
    return _sha({"settings": asdict(config), "data": data, "code": code})


def evaluate_fingerprint(settings: Mapping[str, Any], model_md5: str, data: str, code: str) -> str:
    """What a model's metrics depend on: evaluate settings, the model file, the data and the code."""
    return _sha({"evaluate": dict(settings), "model": model_md5, "data": data, "code": code})


def read_fingerprint(path: Path) -> dict[str, Any]:
    """The stored fingerprint record, or {} when it is missing or unreadable (the model is redone)."""
    try:
        found = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return found if isinstance(found, dict) else {}


@dataclass
class LossRun:
    """What one run of a loss's stage did, model ids per outcome."""

    loss: str
    trained: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    evaluated: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)

    def summary(self) -> str:
        def ids(names: list[str]) -> str:
            return ", ".join(names) if names else "none"

        return (
            f"models@{self.loss}: trained {ids(self.trained)}; kept {ids(self.kept)}; "
            f"evaluated {ids(self.evaluated)}; removed {ids(self.removed)}"
        )


@dataclass
class Outputs:
    """The three output roots: models, metrics records, plots (pr/ and history/ below it)."""

    models: Path
    metrics: Path
    plots: Path

    def model(self, model_id: str) -> Path:
        return placed(self.models, model_id, ".pt")

    def fingerprint(self, model_id: str) -> Path:
        return placed(self.models, model_id, ".json")

    def results(self, model_id: str) -> list[Path]:
        """The evaluation's files: metrics record, PR curve, history."""
        return [
            placed(self.metrics, model_id, ".json"),
            placed(self.plots / "pr", model_id, ".csv"),
            placed(self.plots / "history", model_id, ".json"),
        ]

    def files(self, model_id: str) -> list[Path]:
        return [self.model(model_id), self.fingerprint(model_id), *self.results(model_id)]

    def present(self, loss: str) -> set[str]:
        """Model ids of `loss` with any file in the loss's folders."""
        found: set[str] = set()
        for folder, suffix in (
            (self.models / loss, ".pt"),
            (self.models / loss, ".json"),
            (self.metrics / loss, ".json"),
            (self.plots / "pr" / loss, ".csv"),
            (self.plots / "history" / loss, ".json"),
        ):
            found.update(p.name[: -len(suffix)] for p in folder.glob(f"*{suffix}") if loss_of(p.stem) == loss)
        return found


def build_loss(
    loss: str,
    configs: Mapping[str, TrainConfig],
    manifest: str | os.PathLike,
    outputs: Outputs,
    evaluate: Mapping[str, Any],
    train_code: Sequence[str],
    evaluate_code: Sequence[str],
    features: str | os.PathLike | None = None,
    track: bool = True,
    progress: bool = False,
    log: Callable[[str], None] = print,
) -> LossRun:
    """Bring every model of `loss` up to date: `configs` maps each listed variant to its settings.

    `evaluate` holds `topk` and `pr_lengths`; `train_code` and `evaluate_code` are the source files
    (relative to the working directory) whose bytes enter the fingerprints. Returns what was done.
    """
    from nhl.evaluation import evaluate_file, pr_rows_csv
    from nhl.experiment import check_output_dir, train_from_manifest
    from nhl.variants import model_id

    for option, folder in (("models", outputs.models), ("metrics", outputs.metrics), ("plots", outputs.plots)):
        check_output_dir(folder, f"{option} directory")  # before any work
    run = LossRun(loss)
    wanted = {model_id(loss, variant): variant for variant in configs}
    for stale in sorted(outputs.present(loss) - set(wanted)):
        for path in outputs.files(stale):
            path.unlink(missing_ok=True)
        run.removed.append(stale)
    frozen = any(config.freeze_backbone for config in configs.values())
    data = tree_digest([manifest, *([features] if frozen and features is not None else [])])
    train_digest, evaluate_digest = tree_digest(train_code), tree_digest(evaluate_code)
    splits: dict[str, Any] = {}  # image splits, loaded once for every model that reads images

    def image_splits(*names: str) -> tuple[Any, ...]:
        from nhl.data.dataset import load_split

        with phase("data"):
            for name in names:
                if name not in splits:
                    splits[name] = load_split(manifest, name)
        return tuple(splits[name] for name in names)

    for mid, variant in wanted.items():
        config = configs[variant]
        path, record_path = outputs.model(mid), outputs.fingerprint(mid)
        expected = train_fingerprint(config, data, train_digest)
        stored = read_fingerprint(record_path)
        if path.is_file() and stored.get("train") == expected and stored.get("model_md5") == file_digest(path):
            run.kept.append(mid)  # the same inputs, and the file is the one trained from them
            continue
        record_path.unlink(missing_ok=True)  # until the new model is complete, it has no fingerprint
        use_features = config.freeze_backbone and features is not None
        train_from_manifest(
            config,
            manifest,
            path,
            mid,
            workdir=outputs.models / "checkpoints" / mid,
            progress=progress,
            track=track,
            features=features if use_features else None,
            datasets=None if use_features else image_splits("train", "val"),
        )
        with phase("outputs"):
            stamp = {"model_id": mid, "train": expected, "model_md5": file_digest(path)}
            atomic.write_text(record_path, json.dumps(stamp, indent=1) + "\n")
        run.trained.append(mid)
        log(f"models@{loss}: trained {mid} -> {path}")

    topk, pr_lengths = evaluate.get("topk"), tuple(evaluate.get("pr_lengths", (16, 64)))
    for mid in wanted:
        path, record_path = outputs.model(mid), outputs.fingerprint(mid)
        stored = read_fingerprint(record_path)
        model_md5 = file_digest(path)
        expected = evaluate_fingerprint(
            {"topk": topk, "pr_lengths": list(pr_lengths)}, model_md5, data, evaluate_digest
        )
        files = outputs.results(mid)
        if stored.get("evaluate") == expected and all(p.is_file() for p in files):
            continue
        frozen_model = configs[wanted[mid]].freeze_backbone and features is not None
        record, rows, history = evaluate_file(
            path,
            manifest,
            topk=topk,
            pr_lengths=pr_lengths,
            features=features if frozen_model else None,
            splits=None if frozen_model else image_splits("query", "database"),
        )
        record["model_md5"] = model_md5  # the file the numbers came from (DVC tracks its folder)
        with phase("outputs"):
            atomic.write_text(files[1], pr_rows_csv(rows))
            atomic.write_text(files[2], json.dumps(history, indent=1) + "\n")
            atomic.write_text(files[0], json.dumps(record, indent=2) + "\n")
            atomic.write_text(record_path, json.dumps(dict(stored, evaluate=expected), indent=1) + "\n")
        run.evaluated.append(mid)
        maps = ", ".join(f"{k}: {v['map']:.4f}" for k, v in record["bits"].items())
        log(f"models@{loss}: evaluated {mid}: mAP {maps} -> {files[0]}")
    checkpoints = outputs.models / "checkpoints"
    if checkpoints.is_dir() and not any(checkpoints.iterdir()):
        checkpoints.rmdir()
    return run
