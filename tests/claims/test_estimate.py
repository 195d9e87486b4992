"""`pipelines/claims.py --dry-run`'s cost estimate: models x seconds per model, plus a fixed cost
per loss (one stage process each) and per cell."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from nhl.claims.plan import Cell

ROOT = Path(__file__).resolve().parents[2]


def _driver():
    spec = importlib.util.spec_from_file_location("claims_driver", ROOT / "pipelines" / "claims.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_estimate_adds_models_losses_and_cells():
    driver = _driver()
    two_losses = Cell("mnist5k", 0, "default", ("csq", "dpn"), ("baseline-8", "nhl-full", "nhl-A"), {})
    one_loss = Cell("digits", 0, "default", ("csq",), ("nhl-full",), {})
    cost = {"seconds_per_model": {"mnist5k": 7, "digits": 3}, "seconds_per_loss": 5, "seconds_per_cell": 20}
    # 6 models x 7 s + 2 losses x 5 s + 20 s, then 1 model x 3 s + 1 loss x 5 s + 20 s
    assert driver.estimate_seconds([two_losses, one_loss], cost) == 6 * 7 + 2 * 5 + 20 + 3 + 5 + 20
    assert driver.estimate_seconds([two_losses], {"seconds_per_model": {"mnist5k": 7}}) == 42  # no fixed costs
    assert driver.estimate_seconds([one_loss], {"seconds_per_model": {"mnist5k": 7}}) is None  # digits unknown
