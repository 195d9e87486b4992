"""2,000 classes of 3 images each, end to end at library level: split -> gate -> train -> evaluate.

The path must not build per-class loops over the data, [N, C] label matrices for evaluation,
or a [C, C] centre search: labels travel as CSR / class ids, centres come from the scalable
prefix-consistent generator.
"""

from __future__ import annotations

import numpy as np
import pytest

from nhl.data.audit import render_audit
from nhl.data.dataset import load_split
from nhl.data.manifest import write_manifest
from nhl.data.raw import save_source
from nhl.data.sources import SourceData
from nhl.data.splits import Protocol, make_split
from nhl.evaluation import encode_split, evaluate_model
from nhl.labels import label_form
from nhl.metrics import mean_average_precision
from nhl.training import TrainConfig, train_model

CLASSES, PER_CLASS = 2000, 3
PROTOCOL = Protocol("tiny2000", query=1, train=1, val=1, train_in_database=True)


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    root = tmp_path_factory.mktemp("many")
    rng = np.random.default_rng(0)
    targets = np.repeat(np.arange(CLASSES), PER_CLASS)
    labels = np.zeros((len(targets), CLASSES), np.float32)
    labels[np.arange(len(targets)), targets] = 1
    source = SourceData(
        "many",
        labels,
        tuple(str(c) for c in range(CLASSES)),
        images=rng.integers(0, 256, (len(targets), 8, 8), dtype=np.uint8),
    )
    save_source(source, root / "raw")
    frame, meta = make_split(source, PROTOCOL, seed=0)
    write_manifest(root / "splits", frame, dict(meta, raw_dir=str(root / "raw")))
    return root / "splits", source


def test_a_class_too_small_for_the_protocol_is_a_one_line_error(manifest):
    _, source = manifest
    with pytest.raises(ValueError) as err:
        make_split(source, Protocol("big", query=1, train=2, val=1), seed=0)
    assert str(err.value) == (
        "protocol big: class 0 has 2 items available, needs 3 (train 2 + val 1); 2000 classes are short"
    )


@pytest.mark.slow
def test_the_gate_passes_and_summarises_2000_labels(manifest):
    from nhl.data.validation import validate_manifest

    directory, _ = manifest
    result = validate_manifest(directory)
    assert result.success, [c["check"] for c in result.failed]
    assert result.class_counts["train"] == [1] * CLASSES
    audit = render_audit(result)
    assert "2,000 labels: summarised per split" in audit
    assert "| train | 1 | 1 | 1 | 0 |" in audit and "| database | 2 | 2 | 2 | 0 |" in audit
    assert audit.count("\n| 1999 |") == 0  # not one row per label


@pytest.mark.slow
def test_train_one_epoch_and_evaluate(manifest, tmp_path):
    directory, _ = manifest
    splits = {s: load_split(directory, s) for s in ("train", "val", "query", "database")}
    assert {s: len(d) for s, d in splits.items()} == {"train": 2000, "val": 2000, "query": 2000, "database": 4000}
    assert label_form(splits["database"].compact_labels()) == "ids"
    config = TrainConfig(
        loss="csq",
        lengths=(16, 32),
        centers="prefix",
        backbone="smallcnn",
        backbone_params={"width": 4},
        input_size=8,
        epochs=1,
        batch_size=250,
        seed=0,
        device="cpu",
    )
    result = train_model(config, splits["train"], splits["val"], splits["train"], tmp_path, progress=False)
    assert result.epochs_run == 1 and result.best_epoch == 1
    assert 0.0 <= result.best_score <= 1.0
    bits, rows = evaluate_model(result.model, splits["query"], splits["database"], pr_lengths=(16,))
    assert set(bits) == {"16", "32"} and {r["bits"] for r in rows} == {16}
    # the compact (class id) path gives what the dense one-hot path gives on the same codes
    q_codes, q_dense = encode_split(result.model, splits["query"])
    d_codes, d_dense = encode_split(result.model, splits["database"])
    assert q_dense.shape == (2000, CLASSES)
    for k in (16, 32):
        dense = mean_average_precision(q_codes[:, :k], q_dense, d_codes[:, :k], d_dense)
        assert bits[str(k)]["map"] == pytest.approx(dense, abs=1e-12)
