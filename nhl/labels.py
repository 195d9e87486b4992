"""Label forms that scale with the class count, and conversions between them.

Three forms are accepted wherever labels cross a seam (metrics, losses, index evaluation):

- ``dense``: a multi-hot {0, 1} matrix ``[N, C]`` (numpy or torch), the historical form;
- ``ids``: a 1-D integer vector ``[N]`` of class ids, for single-label data. Two items are
  relevant when their ids are equal, so no ``[N, C]`` or ``[Q, N]`` matrix is ever built;
- ``csr``: a ``scipy.sparse`` matrix ``[N, C]`` (any sparse format, converted to CSR) of 0/1
  entries, for multi-label data with many classes.

Why: at 50,000 classes a dense float label matrix of 54k items needs ~10 GB before any work
starts (issue 22); ids need 8 bytes an item and CSR 12 bytes a label. scipy comes with
scikit-learn and is imported lazily, only when a sparse matrix is actually passed or asked for.
"""

from __future__ import annotations

from typing import Any

import numpy as np

FORMS = ("dense", "ids", "csr")


def is_sparse(x: Any) -> bool:
    """Whether `x` is a scipy.sparse matrix or array (checked without importing scipy)."""
    return type(x).__module__.startswith("scipy.sparse")


def _is_torch(x: Any) -> bool:
    return type(x).__module__.split(".")[0] == "torch"


def _numpy(x: Any) -> np.ndarray:
    return x.detach().cpu().numpy() if _is_torch(x) else np.asarray(x)


def label_form(x: Any) -> str:
    """ "csr" for a scipy sparse matrix, "ids" for a 1-D array or tensor, "dense" for a 2-D one."""
    if is_sparse(x):
        return "csr"
    if not (_is_torch(x) or isinstance(x, np.ndarray)):
        raise ValueError(f"labels: expected a numpy array, torch tensor or scipy sparse matrix, got {type(x).__name__}")
    if x.ndim == 1:
        return "ids"
    if x.ndim == 2:
        return "dense"
    raise ValueError(f"labels: expected class ids [N] or a label matrix [N, C], got shape {tuple(x.shape)}")


def check_labels(x: Any, name: str) -> tuple[str, int | None]:
    """Validate labels of any form; return (form, number of classes or None for ids).

    One-line ValueError naming `name`: ids must be non-negative integers, dense and sparse
    matrices must hold only 0 and 1.
    """
    try:
        form = label_form(x)
    except ValueError as err:
        raise ValueError(f"{name}: {str(err).split(': ', 1)[1]}") from None
    if form == "ids":
        ids = _numpy(x)
        if ids.size and not np.issubdtype(ids.dtype, np.integer) and not np.all(np.equal(np.mod(ids, 1), 0)):
            raise ValueError(f"{name}: class ids must be integers, got dtype {ids.dtype}")
        if ids.size and ids.min() < 0:
            raise ValueError(f"{name}: class ids must be non-negative, got {ids.min()}")
        return form, None
    if form == "csr":
        data = x.tocsr().data
        if data.size and not np.all((data == 0) | (data == 1)):
            raise ValueError(f"{name}: labels must be multi-hot (only 0 and 1)")
        return form, int(x.shape[1])
    ok = (x == 0) | (x == 1)
    if not bool(ok.all()):
        raise ValueError(f"{name}: labels must be multi-hot (only 0 and 1)")
    return form, int(x.shape[1])


def num_rows(x: Any) -> int:
    return int(x.shape[0])


def to_csr(x: Any, num_classes: int | None = None) -> Any:
    """Labels of any form as a CSR matrix of int8 ones with sorted, unique column indices.

    Ids need `num_classes` (or take max id + 1).
    """
    import scipy.sparse as sp

    form = label_form(x)
    if form == "csr":
        out = sp.csr_matrix(x, dtype=np.int8)
        out.eliminate_zeros()
    elif form == "ids":
        ids = _numpy(x).astype(np.int64)
        width = int(num_classes) if num_classes is not None else (int(ids.max()) + 1 if ids.size else 0)
        out = sp.csr_matrix((np.ones(ids.size, np.int8), ids, np.arange(ids.size + 1)), shape=(ids.size, width))
    else:
        out = sp.csr_matrix(_numpy(x) > 0, dtype=np.int8)
    out.sum_duplicates()
    out.sort_indices()
    return out


def to_dense(x: Any, num_classes: int | None = None) -> np.ndarray:
    """Labels of any form as a float32 multi-hot matrix `[N, C]` (only for a modest C)."""
    form = label_form(x)
    if form == "dense":
        return _numpy(x).astype(np.float32)
    return np.asarray(to_csr(x, num_classes).toarray(), dtype=np.float32)


def to_ids(x: Any) -> np.ndarray | None:
    """Class ids `[N]` (int64) when every item has exactly one label; None otherwise."""
    form = label_form(x)
    if form == "ids":
        return _numpy(x).astype(np.int64)
    csr = to_csr(x)
    if not np.all(np.diff(csr.indptr) == 1):
        return None
    return csr.indices.astype(np.int64)


def compact(x: Any) -> Any:
    """The smallest form for `x`: ids when single-label, CSR when multi-label (ids pass through)."""
    if label_form(x) == "ids":
        return x
    ids = to_ids(x)
    return ids if ids is not None else to_csr(x)
