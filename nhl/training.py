"""The one training loop: fixed-length baselines and every NHL variant share it.

A baseline is a `Hasher` with one length; the nested model has several. Adaptive weighting (A)
and cascade distillation (D) are objects passed in through the config, not branches of a
second loop, so the comparison between baselines and NHL is fair by construction: same data
order, optimiser, evaluation, early-stopping rule and patience.
"""

from __future__ import annotations

import copy
import math
import os
import random
import tempfile
from collections.abc import Callable, Sized
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from nhl.distill import similarity_preserving_loss
from nhl.distributed import (
    DistContext,
    GlobalBatchSampler,
    all_reduce_mean,
    broadcast_object,
    synchronise_buffers,
)
from nhl.losses.nested import build_length_losses
from nhl.models.hasher import Hasher, HasherSpec, encode_loader
from nhl.resources import PeakMemory, Stopwatch
from nhl.variants import NESTED_VARIANTS
from nhl.weighting import AdaptiveWeighting

CHECKPOINT_FORMAT = "nhl-checkpoint/1"

# Types accepted for each setting when a config comes from a mapping (YAML): a bool is never an int here.
_EXPECTED_TYPES: dict[str, tuple[type, ...]] = {
    "loss": (str,),
    "lengths": (list, tuple),
    "adaptive": (bool,),
    "distill": (bool,),
    "distill_weight": (int, float),
    "beta": (int, float),
    "faithful": (bool,),
    "centers": (str,),
    "loss_params": (dict,),
    "backbone": (str,),
    "backbone_params": (dict,),
    "pretrained": (bool, str),
    "input_size": (int, type(None)),
    "epochs": (int,),
    "batch_size": (int,),
    "lr": (int, float),
    "weight_decay": (int, float),
    "patience": (int,),
    "eval_every": (int,),
    "seed": (int,),
    "device": (str,),
    "freeze_backbone": (bool,),
}


@dataclass
class TrainConfig:
    """What defines one training run. `lengths` with one entry gives a fixed-length baseline."""

    loss: str = "csq"
    lengths: tuple[int, ...] = (8, 16, 32, 64, 128)
    adaptive: bool = False  # A: dominance-aware adaptive weighting
    distill: bool = False  # D: long-short cascade self-distillation
    distill_weight: float = 1.0  # lambda in L_i + lambda * SP_i
    beta: float = 1.0  # tolerance of the dominance test
    faithful: bool = False  # released code's norm choice in the weighting
    centers: str = "independent"  # or "prefix": prefix-consistent hash centres
    loss_params: dict[str, Any] = field(default_factory=dict)
    backbone: str = "smallcnn"
    backbone_params: dict[str, Any] = field(default_factory=dict)
    pretrained: bool | str = False
    input_size: int | None = None  # resize images to this side inside the model (None: keep)
    freeze_backbone: bool = False  # train the hash head only; the backbone stays as loaded (eval mode)
    epochs: int = 10
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 1e-5
    patience: int = 3  # evaluations without val improvement before stopping
    eval_every: int = 1  # epochs between val evaluations
    seed: int = 0
    device: str = "auto"

    def __post_init__(self) -> None:
        self.lengths = tuple(self.lengths)
        for name in ("epochs", "batch_size", "patience", "eval_every"):
            value = getattr(self, name)
            minimum = 0 if name == "epochs" else 1
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise ValueError(f"{name}: expected an integer >= {minimum}, got {value!r}")
        for name in ("lr", "weight_decay", "distill_weight", "beta"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise ValueError(f"{name}: expected a non-negative number, got {value!r}")
        if self.centers not in ("independent", "prefix"):
            raise ValueError(f"centers: expected 'independent' or 'prefix', got {self.centers!r}")

    @property
    def mode(self) -> str:
        """`baseline` for one length, else the nested variant name (e.g. `nhl-full`)."""
        if len(self.lengths) == 1:
            return "baseline"
        return {flags: name for name, flags in NESTED_VARIANTS.items()}[(self.adaptive, self.distill)]

    @classmethod
    def from_mapping(cls, values: dict[str, Any], where: str = "train") -> TrainConfig:
        """Build from a plain mapping (e.g. a params.yaml section); unknown keys and wrong types
        are one-line errors naming `<where>.<key>`."""
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise ValueError(f"{where}: unknown setting(s) {unknown}; expected some of {sorted(known)}")
        for key, value in values.items():
            expected = _EXPECTED_TYPES.get(key)
            if expected and not (
                isinstance(value, expected) and not (isinstance(value, bool) and bool not in expected)
            ):
                names = " or ".join(t.__name__ for t in expected)
                raise ValueError(f"{where}.{key}: expected {names}, got {value!r}")
        try:
            return cls(**values)
        except ValueError as err:
            raise ValueError(f"{where}.{err}") from None


@dataclass
class TrainResult:
    """The selected model and what it cost. `history` has one record per epoch."""

    model: Hasher
    best_epoch: int
    best_score: float
    epochs_run: int
    history: list[dict[str, Any]]
    train_seconds: float
    peak_memory_mb: float
    peak_memory_delta_mb: float
    cuda_peak_memory_mb: float | None = None


class _TrainForward(nn.Module):
    """`images -> (features, per-length outputs)` in one call, so DDP sees one forward per step."""

    def __init__(self, model: Hasher) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        features = self.model.features(images)
        return features, self.model.head(features)


class NestedObjective(nn.Module):
    """Per-length objectives `L_i(u_i) + lambda * SP(u_i, stopgrad(u_{i+1}))` (SP only with D)."""

    def __init__(self, losses: nn.ModuleList, distill: bool, distill_weight: float) -> None:
        super().__init__()
        self.losses = losses
        self.distill = distill
        self.distill_weight = distill_weight

    def forward(self, outputs: list[torch.Tensor], labels: torch.Tensor, index: torch.Tensor) -> list[torch.Tensor]:
        objectives = []
        for i, (loss, u) in enumerate(zip(self.losses, outputs, strict=True)):
            value = loss(u, labels, index)
            if self.distill and i + 1 < len(outputs):
                value = value + self.distill_weight * similarity_preserving_loss(u, outputs[i + 1].detach())
            objectives.append(value)
        return objectives


def resolve_device(name: str) -> torch.device:
    """`auto` picks CUDA when available, else CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and torch so a CPU run is bit-reproducible.

    The bits also depend on torch's intra-op thread count (float sums are split across threads).
    That count used to change mid-run: numba's first parallel kernel (the first val mAP) raised it
    to all cores, so with OMP_NUM_THREADS=1 a model's epoch 1 ran on one thread and the rest on two,
    and a model resumed or trained alone in a fresh process differed at float level from the same
    model trained after an evaluation. `nhl.threads` keeps the count fixed now (measured: CSQ on
    digits, trained alone or after a DSH model in the same process, gives the same weights at 1
    and at 2 threads; before, the two differed at 1 thread)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002 - seeds the global RNG that third-party code still uses
    torch.manual_seed(seed)


def _num_items(dataset: Dataset) -> int:
    """len() of a map-style dataset (torch's `Dataset` type declares no `__len__`)."""
    return len(cast(Sized, dataset))


def infer_label_shape(dataset: Dataset) -> tuple[int, int]:
    """(number of classes, number of input channels) read from the first item (a dataset of cached
    features, `nhl.features.FeatureSet`, says its images' channels in `in_channels`)."""
    if _num_items(dataset) == 0:
        raise ValueError("train split: expected at least one item, got an empty split")
    image, labels, *_ = dataset[0]
    return int(labels.shape[-1]), int(getattr(dataset, "in_channels", None) or image.shape[0])


class Trainer:
    """Builds model, objective, optimiser and weighting from a config; runs epochs; checkpoints."""

    def __init__(
        self,
        config: TrainConfig,
        train_set: Dataset,
        val_set: Dataset,
        db_set: Dataset,
        workdir: str | os.PathLike,
        progress: bool = True,
        on_epoch: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        self.config = config
        self.train_set, self.val_set, self.db_set = train_set, val_set, db_set
        self.workdir = Path(workdir)
        self.progress = progress
        self.on_epoch = on_epoch
        self.dist = DistContext.from_env(resolve_device(config.device).type)
        self.device = self.dist.device(resolve_device(config.device))
        num_classes, in_channels = infer_label_shape(train_set)
        if _num_items(val_set) == 0:
            raise ValueError("val split: expected at least one item for model selection, got an empty split")

        seed_everything(config.seed)
        spec = HasherSpec(
            config.backbone, in_channels, tuple(config.lengths), dict(config.backbone_params), config.input_size
        )
        self.model = Hasher(spec, pretrained=config.pretrained).to(self.device)
        if config.freeze_backbone:
            self.model.backbone.requires_grad_(False)
        losses = build_length_losses(
            config.loss,
            list(config.lengths),
            num_classes=num_classes,
            num_train=_num_items(train_set),
            centers=config.centers,
            seed=config.seed,
            **config.loss_params,
        )
        self.objective = NestedObjective(losses, config.distill, config.distill_weight).to(self.device)
        trainable = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.Adam(trainable, lr=config.lr, weight_decay=config.weight_decay)
        self.forward_module: nn.Module = _TrainForward(self.model)
        if self.dist.enabled:
            from torch.nn.parallel import DistributedDataParallel

            device_ids = [self.device.index] if self.device.type == "cuda" else None
            self.forward_module = DistributedDataParallel(self.forward_module, device_ids=device_ids)
        self.weighting = AdaptiveWeighting(beta=config.beta, faithful=config.faithful) if config.adaptive else None

        self.epoch = 0
        self.history: list[dict[str, Any]] = []
        self.best_epoch, self.best_score, self.bad_evals = 0, -math.inf, 0
        self.best_state: dict[str, torch.Tensor] = copy.deepcopy(self.model.state_dict())
        self.stopwatch = Stopwatch()

    # -- checkpoints ---------------------------------------------------------------------------
    @property
    def checkpoint_path(self) -> Path:
        return self.workdir / "last.pt"

    def _config_key(self) -> dict[str, Any]:
        key = asdict(self.config)
        key.pop("epochs")  # resuming with more epochs is allowed
        key.pop("device")
        return key

    def save_checkpoint(self) -> None:
        """Everything needed to continue exactly where this epoch ended; written atomically (rank 0)."""
        if not self.dist.is_main:
            self.dist.barrier()
            return
        self._write_checkpoint()
        self.dist.barrier()

    def _write_checkpoint(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        payload = {
            "format": CHECKPOINT_FORMAT,
            "config": self._config_key(),
            "epoch": self.epoch,
            "model": self.model.state_dict(),
            "objective": self.objective.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "history": self.history,
            "best": {
                "epoch": self.best_epoch,
                "score": self.best_score,
                "bad_evals": self.bad_evals,
                "state": self.best_state,
            },
            "train_seconds": self.stopwatch.seconds,
        }
        fd, tmp = tempfile.mkstemp(dir=self.workdir, prefix="last.pt", suffix=".tmp")
        os.close(fd)
        try:
            torch.save(payload, tmp)
            os.replace(tmp, self.checkpoint_path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)

    def load_checkpoint(self) -> bool:
        """Restore from `last.pt` if it exists; returns whether a checkpoint was loaded."""
        path = self.checkpoint_path
        if not path.exists():
            return False
        from nhl.models.hasher import safe_torch_load

        payload = safe_torch_load(path, "checkpoint", self.device, fix="delete it to start over")
        if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(f"checkpoint {path}: not an nhl training checkpoint")
        if payload["config"] != self._config_key():
            changed = sorted(k for k in payload["config"] if payload["config"][k] != self._config_key().get(k))
            raise ValueError(
                f"checkpoint {path}: written by a different configuration (differs in {changed}); "
                "delete it or use another work directory"
            )
        self.model.load_state_dict(payload["model"])
        self.objective.load_state_dict(payload["objective"])
        self.optimizer.load_state_dict(payload["optimizer"])
        torch.set_rng_state(payload["torch_rng"].cpu())
        self.epoch = payload["epoch"]
        self.history = payload["history"]
        best = payload["best"]
        self.best_epoch, self.best_score, self.bad_evals = best["epoch"], best["score"], best["bad_evals"]
        self.best_state = best["state"]
        self.stopwatch = Stopwatch(payload["train_seconds"])
        return True

    # -- one epoch ---------------------------------------------------------------------------
    def _loader(self, dataset: Dataset, shuffle: bool = False) -> DataLoader:
        """Evaluation loader (in order); every process encodes the whole split."""
        return DataLoader(dataset, batch_size=self.config.batch_size, shuffle=shuffle)

    def _train_loader(self) -> DataLoader:
        """This process's share of the epoch's seeded global batches (see `GlobalBatchSampler`)."""
        sampler = GlobalBatchSampler(
            _num_items(self.train_set), self.config.batch_size, self.config.seed, self.dist.rank, self.dist.world_size
        )
        sampler.set_epoch(self.epoch)
        return DataLoader(self.train_set, batch_sampler=sampler)

    def train_step(self, images: torch.Tensor, labels: torch.Tensor, index: torch.Tensor) -> tuple[float, torch.Tensor]:
        """One optimiser step; returns (weighted loss, per-length weights used)."""
        features, outputs = self.forward_module(images)
        n = len(outputs)
        # A+D: the losses (with their distillation terms) are evaluated once; the weighting probes
        # those same objectives down to the head weight only (see AdaptiveWeighting.from_objectives).
        objectives = self.objective(outputs, labels, index)
        if self.weighting is not None and n > 1:
            weights = self.weighting.from_objectives(
                self.model.head.linear.weight, objectives, [u.shape[1] for u in outputs]
            )
        else:
            weights = torch.ones(n, device=features.device)
        total = sum(w * obj for w, obj in zip(weights.to(features.device), objectives, strict=True))
        self.optimizer.zero_grad(set_to_none=True)
        total.backward()
        self.optimizer.step()
        (mean_total,) = all_reduce_mean([total.detach()])  # same value, and same NaN check, on every process
        return float(mean_total), weights.detach().cpu()

    def train_epoch(self) -> dict[str, Any]:
        from tqdm.auto import tqdm

        self.model.train()
        if self.config.freeze_backbone:
            self.model.backbone.eval()  # frozen: batch-norm statistics stay as loaded too
        loader = self._train_loader()
        losses = []
        bar = tqdm(
            loader,
            desc=f"{self.config.loss} {self.config.mode} epoch {self.epoch + 1}/{self.config.epochs}",
            leave=False,
            disable=not (self.progress and self.dist.is_main),
            unit="batch",
        )
        with self.stopwatch:
            for step, (images, labels, index) in enumerate(bar):
                images, labels, index = images.to(self.device), labels.to(self.device).float(), index.to(self.device)
                loss, _ = self.train_step(images, labels, index)
                if not math.isfinite(loss):
                    kept = (
                        f"the last good checkpoint is kept at {self.checkpoint_path}"
                        if self.checkpoint_path.exists()
                        else "no checkpoint was written"
                    )
                    raise FloatingPointError(
                        f"loss {self.config.loss} became {loss} at epoch {self.epoch + 1}, step {step + 1} "
                        f"(check train.lr and losses.{self.config.loss}); {kept}"
                    )
                losses.append(loss)
                bar.set_postfix(loss=f"{loss:.4f}")
        record: dict[str, Any] = {
            "epoch": self.epoch + 1,
            "train_loss": float(np.mean(losses)) if losses else float("nan"),
            "train_seconds": self.stopwatch.seconds,
        }
        if self.weighting is not None:
            summary = self.weighting.epoch_summary()
            self.weighting.reset()
            record["weights"] = summary
        return record

    # -- evaluation ----------------------------------------------------------------------------
    def evaluate(self) -> dict[int, float]:
        """Val mAP@ALL per length, with the val split as queries and the database set (train) as database."""
        from nhl.metrics import mean_average_precision

        query_codes, query_labels = encode_split_labels(self.model, self._loader(self.val_set), self.device)
        db_codes, db_labels = encode_split_labels(self.model, self._loader(self.db_set), self.device)
        return {
            k: float(mean_average_precision(query_codes[:, :k], query_labels, db_codes[:, :k], db_labels))
            for k in self.config.lengths
        }

    # -- one validation decision for every process (torchrun) -----------------------------------
    def agreed_evaluate(self) -> dict[int, float]:
        """`evaluate()` computed once, on rank 0, after the processes' buffers are synchronised;
        every rank receives the same scores, so early stopping, the best epoch and the saved
        state follow one decision (ranks deciding alone left one rank waiting in an all-reduce
        while the other had stopped: a hang until the process-group timeout)."""
        if not self.dist.enabled:
            return self.evaluate()
        synchronise_buffers(self.model)
        scores = broadcast_object(self.evaluate() if self.dist.is_main else None)
        assert scores is not None, "rank 0 (the main process, the broadcast's source) always evaluates"
        return scores

    # -- the loop ------------------------------------------------------------------------------
    def fit(self, resume: bool = False) -> TrainResult:
        """Train until `epochs` or early stopping; select one checkpoint for all lengths by mean val mAP."""
        if resume:
            self.load_checkpoint()
        elif self.checkpoint_path.exists():
            self.checkpoint_path.unlink()
        with PeakMemory(device=self.device) as memory:
            while self.epoch < self.config.epochs and not self._stopped_early():
                record = self.train_epoch()
                self.epoch += 1
                if self.epoch % self.config.eval_every == 0 or self.epoch == self.config.epochs:
                    val_map = self.agreed_evaluate()
                    score = float(np.mean(list(val_map.values())))
                    record["val_map"] = {str(k): v for k, v in val_map.items()}
                    record["val_map_mean"] = score
                    if score > self.best_score:
                        self.best_epoch, self.best_score, self.bad_evals = self.epoch, score, 0
                        self.best_state = copy.deepcopy(self.model.state_dict())
                    else:
                        self.bad_evals += 1
                self.history.append(record)
                self.save_checkpoint()
                if self.on_epoch is not None and self.dist.is_main:
                    self.on_epoch(record)
        self.model.load_state_dict(self.best_state)
        self.model.eval()
        return TrainResult(
            model=self.model,
            best_epoch=self.best_epoch,
            best_score=self.best_score,
            epochs_run=self.epoch,
            history=self.history,
            train_seconds=self.stopwatch.seconds,
            peak_memory_mb=memory.peak_mb,
            peak_memory_delta_mb=memory.delta_mb,
            cuda_peak_memory_mb=memory.cuda_peak_mb,
        )

    def _stopped_early(self) -> bool:
        return self.bad_evals >= self.config.patience


def encode_split_labels(model: Hasher, loader: DataLoader, device: torch.device) -> tuple[torch.Tensor, Any]:
    """(codes, labels) of a loader's dataset; the labels in the dataset's compact form (class ids or
    CSR, `nhl.labels`) when it offers one, so validation never stacks `[N, C]` rows."""
    compact = getattr(loader.dataset, "compact_labels", None)
    codes, labels = encode_loader(model, loader, device, keep_labels=compact is None)
    return codes, (compact() if compact is not None else labels)


def train_model(
    config: TrainConfig,
    train_set: Dataset,
    val_set: Dataset,
    db_set: Dataset,
    workdir: str | os.PathLike,
    resume: bool = False,
    progress: bool = True,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
) -> TrainResult:
    """Train one model (baseline or nested) and return the checkpoint selected on the val split."""
    trainer = Trainer(config, train_set, val_set, db_set, workdir, progress=progress, on_epoch=on_epoch)
    return trainer.fit(resume=resume)
