"""The shared input check of every retrieval metric: +-1 codes and labels (dense multi-hot, class ids
or sparse, see `nhl.labels`), numpy or torch.

It sits below both `nhl.metrics` (flat relevance) and `nhl.hierarchy` (graded relevance), so
neither imports the other to validate its inputs.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from nhl.labels import check_labels


def is_torch(x: Any) -> bool:
    """True for a torch tensor, decided without importing torch."""
    return type(x).__module__.split(".")[0] == "torch"


def to_numpy(x: Any) -> np.ndarray:
    """A numpy view of an array or a (detached, CPU) torch tensor."""
    return x.detach().cpu().numpy() if is_torch(x) else np.asarray(x)


def _check_matrix(x: Any, name: str, allowed: tuple[int, ...], what: str) -> None:
    if not (is_torch(x) or isinstance(x, np.ndarray)):
        raise ValueError(f"{name}: expected a numpy array or torch tensor, got {type(x).__name__}")
    if x.ndim != 2:
        raise ValueError(f"{name}: expected a 2-D matrix, got shape {tuple(x.shape)}")
    ok = x == allowed[0]
    for value in allowed[1:]:
        ok = ok | (x == value)
    if not bool(ok.all()):
        raise ValueError(f"{name}: {what}")


def check_inputs(query_codes: Any, query_labels: Any, db_codes: Any, db_labels: Any) -> int:
    """Validate the four retrieval inputs; return the number of bits (one-line ValueError).

    Labels may be dense multi-hot `[N, C]`, class ids `[N]` or scipy sparse `[N, C]`
    (`nhl.labels`); the two sides may use different forms.
    """
    _check_matrix(query_codes, "query_codes", (-1, 1), "codes must contain only -1 and +1")
    _check_matrix(db_codes, "db_codes", (-1, 1), "codes must contain only -1 and +1")
    _, q_classes = check_labels(query_labels, "query_labels")
    _, d_classes = check_labels(db_labels, "db_labels")
    if query_codes.shape[1] != db_codes.shape[1] or query_codes.shape[1] == 0:
        raise ValueError(
            f"query_codes / db_codes: bits differ or are 0 ({query_codes.shape[1]} vs {db_codes.shape[1]})"
        )
    if 0 in (q_classes, d_classes) or (None not in (q_classes, d_classes) and q_classes != d_classes):
        raise ValueError(f"query_labels / db_labels: number of classes differs or is 0 ({q_classes} vs {d_classes})")
    if query_codes.shape[0] != query_labels.shape[0] or query_codes.shape[0] == 0:
        raise ValueError(
            f"query_codes / query_labels: need the same, non-zero number of rows "
            f"({query_codes.shape[0]} vs {query_labels.shape[0]})"
        )
    if db_codes.shape[0] != db_labels.shape[0]:
        raise ValueError(
            f"db_codes / db_labels: need the same number of rows ({db_codes.shape[0]} vs {db_labels.shape[0]})"
        )
    return int(query_codes.shape[1])
