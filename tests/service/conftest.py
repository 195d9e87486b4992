"""A tiny digits model trained for one epoch, shared by the `nhl serve` tests."""

from __future__ import annotations

from dataclasses import asdict

import pytest


@pytest.fixture(scope="session")
def served_model(tmp_path_factory, digits_splits):
    """A model file (lengths 8, 16, 32) trained 1 epoch on the digits split."""
    from nhl.models.hasher import save_hasher
    from nhl.training import TrainConfig, train_model

    root = tmp_path_factory.mktemp("serve-model")
    config = TrainConfig(loss="csq", lengths=(8, 16, 32), backbone="smallcnn", backbone_params={"width": 8},
                         epochs=1, batch_size=64, device="cpu", seed=0)
    result = train_model(config, digits_splits.train, digits_splits.val, digits_splits.train,
                         root / "work", progress=False)
    save_hasher(result.model, root / "model.pt", extra={"model_id": "csq-nhl-full", "config": asdict(config)})
    return root / "model.pt"
