"""The shipped pipeline params files are complete: every model of their matrix builds a valid training config."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from nhl.data.splits import get_protocol
from nhl.experiment import build_train_config
from nhl.models.backbones import list_backbones

ROOT = Path(__file__).resolve().parents[1]
# pipeline params files (a full params.yaml each); params/claims.yaml is an experiment plan, tested in test_claims
FILES = [ROOT / "params.yaml", ROOT / "params" / "cifar10.yaml", ROOT / "params" / "own-images.yaml"]


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_every_model_of_the_matrix_builds(path):
    params = yaml.safe_load(path.read_text())
    get_protocol(params["data"]["protocol"])
    assert params["train"]["backbone"] in list_backbones()
    for loss in params["models"]["losses"]:
        for variant in params["models"]["variants"]:
            config = build_train_config(params["train"], loss, variant, params["losses"].get(loss) or {})
            assert set(config.lengths) <= set(params["train"]["lengths"])


@pytest.mark.parametrize("path", FILES[1:], ids=lambda p: p.name)
def test_alternative_params_files_have_every_section_of_the_default(path):
    default = yaml.safe_load(FILES[0].read_text())
    other = yaml.safe_load(path.read_text())
    assert set(default) <= set(other), f"{path.name} lacks {sorted(set(default) - set(other))}"
    for section in ("data", "train", "evaluate"):
        assert set(default[section]) <= set(other[section]), (
            section,
            sorted(set(default[section]) - set(other[section])),
        )
