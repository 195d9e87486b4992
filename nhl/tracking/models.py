"""Logging and loading trained models through MLflow's pytorch flavour."""

from __future__ import annotations

import contextlib
import copy
import logging
import os
from importlib import metadata
from typing import Iterator

import numpy as np
import torch
from torch import nn

from nhl.envvars import keep_environ, scoped_environ
from nhl.tracking.store import tracking_uri

MODEL_REQUIREMENTS = ("torch", "numpy", "cloudpickle")


@contextlib.contextmanager
def quiet_logger(logger: str, level: int = logging.ERROR) -> Iterator[None]:
    """Raise one logger's level for the block."""
    target = logging.getLogger(logger)
    saved = target.level
    target.setLevel(level)
    try:
        yield
    finally:
        target.setLevel(saved)


def pytorch_flavor():
    """`mlflow.pytorch`, imported without letting it reconfigure the root logger.

    Its import calls `logging.basicConfig(level=logging.ERROR)`, which would hide every other
    warning of the process; the root logger's level and handlers are put back.
    """
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    import mlflow.pytorch

    root.setLevel(level)
    for handler in list(root.handlers):
        if handler not in handlers:
            root.removeHandler(handler)
    return mlflow.pytorch


class LongestOutput(nn.Module):
    """Serve a nested model as one tensor: the raw output of its longest code `[B, k_max]`.

    A `Hasher` returns one output per length, each the prefix of the longest, so nothing is lost;
    MLflow's pytorch flavour (and `mlflow models serve`) needs a single output tensor. The
    trained model is `.model`.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outputs = self.model(x)
        return max(outputs, key=lambda out: out.shape[-1])


def pinned_requirements(packages: tuple[str, ...] = MODEL_REQUIREMENTS) -> list[str]:
    """`name==version` of installed packages (local labels such as `+cu130` dropped), given to
    MLflow explicitly because inferring them costs 10-40 s a model."""
    return [f"{name}=={metadata.version(name).split('+')[0]}" for name in packages]


def serving_model(model: nn.Module, input_example: np.ndarray) -> tuple[nn.Module, np.ndarray]:
    """A CPU copy of `model` in eval mode with one output tensor, and its output on `input_example`.

    The copy leaves the caller's model untouched (device, train mode, batch-norm statistics).
    """
    module = copy.deepcopy(model).cpu().eval()
    with torch.no_grad():
        output = module(torch.as_tensor(input_example))
    if isinstance(output, (list, tuple)):
        module = LongestOutput(module)
        output = max(output, key=lambda out: out.shape[-1])
    return module, output.detach().cpu().numpy()


def load_logged_model(run_id: str, name: str = "model", project_root: str | os.PathLike | None = None,
                      map_location: str | torch.device = "cpu") -> nn.Module:
    """Load the torch module logged by `ModelRun.log_model`; `run_id` may also be a full model
    URI (`runs:/...`, `models:/...`). A nested model comes back wrapped in `LongestOutput`."""
    import mlflow

    flavor = pytorch_flavor()
    with keep_environ("MLFLOW_TRACKING_URI"):
        mlflow.set_tracking_uri(tracking_uri(project_root))
    uri = run_id if ":/" in run_id else f"runs:/{run_id}/{name}"
    with scoped_environ({"MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}):
        return flavor.load_model(uri, map_location=map_location)
