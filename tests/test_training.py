"""The one training loop: every mode trains, A leaves no probe gradient, resume is exact, NaN stops cleanly."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from nhl.metrics import mean_average_precision
from nhl.models.hasher import encode_loader
from nhl.training import TrainConfig, Trainer, train_model
from nhl.weighting import dominance_weights

FAST = dict(backbone="smallcnn", backbone_params={"width": 16}, batch_size=50, lr=3e-3, epochs=2, seed=0)


def _config(**overrides) -> TrainConfig:
    return TrainConfig(**{**FAST, **overrides})


def _query_map(model, splits, k: int) -> float:
    loader = torch.utils.data.DataLoader
    q, ql = encode_loader(model, loader(splits.query, batch_size=200))
    d, dl = encode_loader(model, loader(splits.database, batch_size=500))
    return mean_average_precision(q[:, :k], ql, d[:, :k], dl)


def _random_map(splits, seed: int = 0) -> float:
    """mAP of random codes on the same query/database: what 'beats random retrieval' is measured against."""
    rng = np.random.default_rng(seed)
    q = np.where(rng.random((len(splits.query), 16)) < 0.5, -1, 1)
    d = np.where(rng.random((len(splits.database), 16)) < 0.5, -1, 1)
    return mean_average_precision(q, splits.query.labels, d, splits.database.labels)


MODES = {
    "baseline-16": dict(lengths=(16,)),
    "nhl-noA-noD": dict(lengths=(8, 16, 32)),
    "nhl-A": dict(lengths=(8, 16, 32), adaptive=True),
    "nhl-D": dict(lengths=(8, 16, 32), distill=True),
    "nhl-full": dict(lengths=(8, 16, 32), adaptive=True, distill=True),
}


@pytest.mark.parametrize("loss", ["csq", "dpn"])
@pytest.mark.parametrize("mode", list(MODES))
def test_every_mode_and_loss_trains_and_beats_random_retrieval(digits_splits, tmp_path, loss, mode):
    config = _config(loss=loss, **MODES[mode])
    result = train_model(config, digits_splits.train, digits_splits.val, digits_splits.train, tmp_path, progress=False)
    assert config.mode == ("baseline" if mode.startswith("baseline") else mode)
    assert result.epochs_run == 2 and 1 <= result.best_epoch <= 2
    assert result.train_seconds > 0 and result.peak_memory_mb > 0
    random_map = _random_map(digits_splits)
    for k in config.lengths:
        assert _query_map(result.model, digits_splits, k) > random_map + 0.15, (loss, mode, k)


def test_adaptive_step_equals_a_manual_update_with_no_probe_gradient_left(digits_splits, tmp_path):
    """One step of A+D must equal: weights from probe gradients, then ONE clean backward (defect B5)."""
    config = _config(loss="csq", lengths=(8, 16, 32), adaptive=True, distill=True, distill_weight=0.5)
    trainer = Trainer(config, digits_splits.train, digits_splits.val, digits_splits.train, tmp_path, progress=False)
    # plain SGD on both sides: the update is then the gradient itself, so any leftover probe
    # gradient would show, and Adam's g / (|g| + eps) cannot amplify float rounding
    trainer.optimizer = torch.optim.SGD(trainer.model.parameters(), lr=0.1)
    model, objective = copy.deepcopy(trainer.model), copy.deepcopy(trainer.objective)
    images = torch.stack([digits_splits.train[i][0] for i in range(32)])
    labels = torch.stack([digits_splits.train[i][1] for i in range(32)])
    index = torch.arange(32)

    # manual reference: probe on the detached feature with autograd.grad, then a single backward
    features = model.features(images)
    probe_outputs = model.head(features.detach())
    sp = [objective.distill_weight * _sp(probe_outputs[i], probe_outputs[i + 1].detach()) for i in range(2)] + [0.0]
    probe_objs = [objective.losses[i](probe_outputs[i], labels, index) + sp[i] for i in range(3)]
    grads = [torch.autograd.grad(o, model.head.linear.weight, retain_graph=True)[0].flatten() for o in probe_objs]
    weights = dominance_weights(grads, [8, 16, 32], beta=config.beta)
    outputs = model.head(features)
    sp = [objective.distill_weight * _sp(outputs[i], outputs[i + 1].detach()) for i in range(2)] + [0.0]
    total = sum(weights[i] * (objective.losses[i](outputs[i], labels, index) + sp[i]) for i in range(3))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    optimizer.zero_grad()
    assert all(p.grad is None for p in model.parameters())  # the probe left nothing behind
    total.backward()
    optimizer.step()

    _, used = trainer.train_step(images, labels, index)
    torch.testing.assert_close(used, weights)
    for (name, mine), theirs in zip(trainer.model.state_dict().items(), model.state_dict().values(), strict=True):
        torch.testing.assert_close(mine, theirs, msg=name)


def _sp(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """SP loss written out: row-normalised Gram matrices, squared Frobenius distance over B^2."""
    gs = torch.nn.functional.normalize(student @ student.T, dim=1)
    gt = torch.nn.functional.normalize(teacher @ teacher.T, dim=1)
    return ((gt - gs) ** 2).sum() / student.shape[0] ** 2


class _Interrupt(Exception):
    pass


def test_resume_after_an_interruption_gives_the_same_weights(digits_splits, tmp_path):
    config = _config(loss="dsh", lengths=(8, 16), adaptive=True, epochs=3)
    full = train_model(
        config, digits_splits.train, digits_splits.val, digits_splits.train, tmp_path / "a", progress=False
    )

    def stop_after_second_epoch(record):
        if record["epoch"] == 2:
            raise _Interrupt

    with pytest.raises(_Interrupt):
        train_model(
            config,
            digits_splits.train,
            digits_splits.val,
            digits_splits.train,
            tmp_path / "b",
            progress=False,
            on_epoch=stop_after_second_epoch,
        )
    resumed = train_model(
        config, digits_splits.train, digits_splits.val, digits_splits.train, tmp_path / "b", resume=True, progress=False
    )
    assert resumed.epochs_run == 3 and resumed.best_epoch == full.best_epoch
    assert [r["train_loss"] for r in resumed.history] == [r["train_loss"] for r in full.history]
    for (name, a), b in zip(full.model.state_dict().items(), resumed.model.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


def test_resume_refuses_a_checkpoint_of_another_configuration(digits_splits, tmp_path):
    train_model(
        _config(loss="csq", lengths=(8,), epochs=1),
        digits_splits.train,
        digits_splits.val,
        digits_splits.train,
        tmp_path,
        progress=False,
    )
    with pytest.raises(ValueError, match=r"different configuration .*lengths"):
        train_model(
            _config(loss="csq", lengths=(16,), epochs=1),
            digits_splits.train,
            digits_splits.val,
            digits_splits.train,
            tmp_path,
            resume=True,
            progress=False,
        )


def test_nan_loss_stops_with_the_loss_name_and_epoch_and_keeps_the_last_checkpoint(digits_splits, tmp_path):
    trainer = Trainer(
        _config(loss="csq", lengths=(8, 16), epochs=3),
        digits_splits.train,
        digits_splits.val,
        digits_splits.train,
        tmp_path,
        progress=False,
    )
    original = trainer.objective.forward

    def poisoned(outputs, labels, index):
        values = original(outputs, labels, index)
        return [v * float("nan") for v in values] if trainer.epoch == 1 else values

    trainer.objective.forward = poisoned
    with pytest.raises(FloatingPointError, match=r"loss csq became nan at epoch 2"):
        trainer.fit()
    saved = torch.load(trainer.checkpoint_path, weights_only=True)
    assert saved["epoch"] == 1
    assert all(torch.isfinite(t).all() for t in saved["model"].values() if t.is_floating_point())


def test_early_stopping_counts_evaluations_without_improvement_and_keeps_the_best(digits_splits, tmp_path):
    trainer = Trainer(
        _config(loss="csq", lengths=(8, 16), epochs=10, patience=2),
        digits_splits.train,
        digits_splits.val,
        digits_splits.train,
        tmp_path,
        progress=False,
    )
    scores = iter([0.3, 0.5, 0.4, 0.45, 0.9, 0.9])
    snapshots = {}

    def scripted():
        snapshots[trainer.epoch] = copy.deepcopy(trainer.model.state_dict())
        score = next(scores)
        return {8: score, 16: score}

    trainer.evaluate = scripted
    result = trainer.fit()
    assert result.epochs_run == 4  # improvement at 2, then two evaluations without
    assert result.best_epoch == 2 and result.best_score == pytest.approx(0.5)
    for name, value in result.model.state_dict().items():
        assert torch.equal(value, snapshots[2][name]), name


@pytest.mark.parametrize(
    "values, message",
    [
        ({"epochs": "3"}, r"train\.epochs: expected int"),
        ({"lr": True}, r"train\.lr: expected int or float"),
        ({"batch_size": 0}, r"train\.batch_size: expected an integer >= 1"),
        ({"centres": "prefix"}, r"train: unknown setting\(s\) \['centres'\]"),
        ({"centers": "shared"}, r"train\.centers: expected 'independent' or 'prefix'"),
    ],
)
def test_config_from_mapping_names_the_bad_field(values, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig.from_mapping(values)
