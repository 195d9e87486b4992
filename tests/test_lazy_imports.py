"""Importing nhl and a stage's library modules loads no heavy package that the stage does not use.

Each stage's imports run in a fresh interpreter (the way DVC starts a stage), and `sys.modules` is
read afterwards. mlflow, prefect, great_expectations and dvc are imported only inside the
functions that use them; the report stage also stays free of torch (it logs a run, no model).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("mlflow", "prefect", "great_expectations", "dvc", "torch", "torchvision")

# stage -> (the nhl modules its script imports, heavy packages allowed at import time)
STAGES = {
    "fetch": (["nhl.atomic", "nhl.data.raw", "nhl.data.sources"], set()),
    "split": (["nhl.atomic", "nhl.data.manifest", "nhl.data.raw", "nhl.data.splits"], set()),
    "validate": (["nhl.data.audit", "nhl.data.validation"], set()),
    "train": (["nhl.experiment", "nhl.variants", "nhl.timing"], {"torch"}),
    "evaluate": (["nhl.atomic", "nhl.evaluation", "nhl.experiment", "nhl.timing"], {"torch"}),
    "report": (["nhl.report", "nhl.tracking", "nhl.timing"], set()),
    "cli": (["nhl.cli"], set()),
}


def loaded_after(modules: list[str], tracking_names: bool = False) -> set[str]:
    """Top-level heavy packages in sys.modules after importing `modules` in a fresh interpreter."""
    code = "\n".join(
        [
            "import json, sys",
            "import nhl",
            *(f"import {m}" for m in modules),
            # the names the report stage takes from nhl.tracking, resolved as it resolves them
            *(["from nhl.tracking import ModelRun, tracking_uri, DEFAULT_EXPERIMENT"] if tracking_names else []),
            f"print(json.dumps(sorted(m for m in {list(HEAVY)!r} if m in sys.modules)))",
        ]
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stderr
    return set(json.loads(done.stdout.strip().splitlines()[-1]))


@pytest.mark.parametrize("stage", list(STAGES))
def test_a_stage_imports_only_the_heavy_packages_it_uses(stage):
    modules, allowed = STAGES[stage]
    loaded = loaded_after(modules, tracking_names=stage == "report")
    assert loaded <= allowed, f"{stage}: importing {modules} loaded {sorted(loaded - allowed)}"
    if allowed:  # the check can see a heavy package when one is loaded
        assert loaded == allowed
