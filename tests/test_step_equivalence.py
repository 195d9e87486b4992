"""The A+D step after the overhead cut (issue 15) trains exactly the model the earlier step trained.

The reference below is the step as it was before: the weighting ran the head a second time on the
detached features, evaluated every loss (and distillation term) a second time for the probe, took
the probe gradients there, then evaluated the objectives again for the update. The trainer now
evaluates the objectives once and probes them down to the head weight. A fixed-seed nhl-full run
through both must give the same weights, the same per-epoch losses and the same adaptive weights.
"""

from __future__ import annotations

import pytest
import torch

from nhl.training import TrainConfig, Trainer
from nhl.weighting import dominance_weights, probe_gradients


def _reference_step(trainer: Trainer):
    """The pre-issue-15 `train_step`, written out: probe on a second head pass, then the update."""

    def step(images: torch.Tensor, labels: torch.Tensor, index: torch.Tensor) -> tuple[float, torch.Tensor]:
        model, objective, weighting = trainer.model, trainer.objective, trainer.weighting
        features = model.features(images)
        outputs = model.head(features)
        probe_outputs = model.head(features.detach())
        probe_objectives = objective(probe_outputs, labels, index)
        grads = probe_gradients(model.head.linear.weight, probe_objectives)
        weights = dominance_weights(grads, [u.shape[1] for u in outputs], weighting.beta, weighting.faithful)
        weighting._record(weights)
        objectives = objective(outputs, labels, index)
        total = sum(w * obj for w, obj in zip(weights, objectives, strict=True))
        trainer.optimizer.zero_grad(set_to_none=True)
        total.backward()
        trainer.optimizer.step()
        return float(total.detach()), weights.detach()

    return step


@pytest.mark.parametrize("loss", ["csq", "dsh", "hashnet"])  # centres, a memory bank, a stateful scale
def test_nhl_full_run_gives_the_same_weights_as_the_reference_step(digits_splits, tmp_path, loss):
    config = TrainConfig(
        loss=loss,
        lengths=(8, 16, 32),
        adaptive=True,
        distill=True,
        distill_weight=0.5,
        backbone="smallcnn",
        backbone_params={"width": 16},
        batch_size=50,
        lr=3e-3,
        epochs=2,
        seed=3,
        beta=0.01,
    )
    runs = {}
    for name in ("current", "reference"):
        trainer = Trainer(
            config, digits_splits.train, digits_splits.val, digits_splits.train, tmp_path / name, progress=False
        )
        if name == "reference":
            trainer.train_step = _reference_step(trainer)
        trainer.fit()
        runs[name] = trainer
    current, reference = runs["current"], runs["reference"]
    assert [r["epoch"] for r in current.history] == [1, 2]
    for mine, theirs in zip(current.history, reference.history, strict=True):
        assert mine["train_loss"] == pytest.approx(theirs["train_loss"], rel=1e-5)
        assert mine["weights"]["mean_weights"] == pytest.approx(theirs["weights"]["mean_weights"], rel=1e-5)
        assert mine["val_map"] == pytest.approx(theirs["val_map"], abs=1e-6)
    if loss == "csq":  # with csq the weighting acts in this run (so A itself is compared, not only D)
        assert any(r["weights"]["reduced_fraction"] > 0 for r in reference.history)
    mine_state, theirs_state = current.model.state_dict(), reference.model.state_dict()
    assert mine_state.keys() == theirs_state.keys()
    for key in mine_state:
        torch.testing.assert_close(mine_state[key], theirs_state[key], rtol=1e-5, atol=1e-6, msg=key)
    for key, value in current.objective.state_dict().items():  # memory banks, HashNet's step
        torch.testing.assert_close(value, reference.objective.state_dict()[key], rtol=1e-5, atol=1e-6, msg=key)
