"""Every registered loss trains a fixed-length and a nested model on digits and beats random retrieval.

Parametrised over `list_losses()`, so a loss added later is covered without editing this file.
Settings are the shared smoke-test ones (smallcnn width 16, batch 50, lr 3e-3, 2 epochs). A loss
that measurably needs other settings to learn from scratch in 2 epochs is listed in OVERRIDES with
the reason; the defaults are not bent to pass this test.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nhl.losses import list_losses
from nhl.metrics import mean_average_precision
from nhl.models.hasher import encode_loader
from nhl.training import TrainConfig, train_model

SETTINGS = dict(backbone="smallcnn", backbone_params={"width": 16}, batch_size=50, lr=3e-3, epochs=2, seed=0)

# Over random codes' mAP (0.105 here): every loss, both modes, must reach 0.255 at every length, about
# 2.4x random. Measured with these settings (overrides included), seed 0, on 2026-11-29 (busy machine,
# timings meaningless): the smallest excess over random at any length was 0.205 (lcdsh nested at 8
# bits), then orthohash nested 0.206, dbdh nested 0.223, dpsh nested 0.227, dhn nested 0.229; the
# others 0.24-0.73. A model whose codes are all equal scores 0.104. The bar was 0.07 before.
MARGIN = 0.15

# From scratch every item starts with nearly the same code (0.8 mean bit agreement between two
# digits under the untrained smallcnn). The pairwise likelihood losses on raw u (DHN, DBDH, DPSH;
# 90% of pairs dissimilar) then shrink the common code toward the origin and at lr 3e-3 stall there
# (query mAP 0.13-0.24 after 2 epochs, seeds 0-2); at lr 1e-3 they learn (0.28-0.40). LCDSH's
# agreement term (lambda 3) pulls the continuous similarities toward those of the all-equal binary
# codes: 1-2 distinct codes at lr 3e-3, 0.18-0.20 mAP with 6-7 codes at lr 1e-3; lambda 0.3 learns.
# Those were measured on raw codes (the released losses, now `normalise=False`). The pairwise
# losses now normalise their codes by default (nhl.losses.pairs.rms_normalise); the overrides have
# not been re-measured under that default.
OVERRIDES: dict[str, dict] = {
    "dhn": dict(lr=1e-3),
    "dbdh": dict(lr=1e-3),
    "dpsh": dict(lr=1e-3),
    "lcdsh": dict(lr=1e-3, loss_params={"quant_weight": 0.3}),
}


@pytest.fixture(scope="module")
def random_map(digits_splits) -> float:
    """mAP of random +-1 codes on the same query/database."""
    rng = np.random.default_rng(0)
    q = np.where(rng.random((len(digits_splits.query), 16)) < 0.5, -1, 1)
    d = np.where(rng.random((len(digits_splits.database), 16)) < 0.5, -1, 1)
    return mean_average_precision(q, digits_splits.query.labels, d, digits_splits.database.labels)


def _query_maps(model, splits, lengths) -> dict[int, float]:
    loader = torch.utils.data.DataLoader
    q, ql = encode_loader(model, loader(splits.query, batch_size=200))
    d, dl = encode_loader(model, loader(splits.database, batch_size=500))
    return {k: mean_average_precision(q[:, :k], ql, d[:, :k], dl) for k in lengths}


@pytest.mark.parametrize("lengths", [(16,), (8, 16, 32)], ids=["baseline-16", "nested-8-16-32"])
@pytest.mark.parametrize("name", list_losses())
def test_loss_trains_and_beats_random_retrieval(digits_splits, tmp_path, random_map, name, lengths):
    config = TrainConfig(**{**SETTINGS, "loss": name, "lengths": lengths, **OVERRIDES.get(name, {})})
    result = train_model(config, digits_splits.train, digits_splits.val, digits_splits.train, tmp_path, progress=False)
    assert result.epochs_run == 2
    maps = _query_maps(result.model, digits_splits, lengths)
    assert all(m > random_map + MARGIN for m in maps.values()), (name, maps, random_map)
