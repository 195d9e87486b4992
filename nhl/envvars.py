"""Scoped environment variables: set or protect them for one block only.

MLflow reads its settings from the environment at each call, and `mlflow.set_tracking_uri` /
`mlflow.set_experiment` export MLFLOW_TRACKING_URI and MLFLOW_EXPERIMENT_ID as a side effect;
left set, the first project configured in a process would look like a user override for every
later one. These two context managers keep such changes inside the block that needs them.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping


@contextlib.contextmanager
def keep_environ(*names: str) -> Iterator[None]:
    """Undo, on leaving the block, any change made inside it to these environment variables."""
    saved = {name: os.environ.get(name) for name in names}
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@contextlib.contextmanager
def scoped_environ(values: Mapping[str, str]) -> Iterator[None]:
    """Set these environment variables for the block only; the previous values come back after."""
    with keep_environ(*values):
        os.environ.update(values)
        yield
