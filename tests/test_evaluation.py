"""Evaluation of a saved model on query vs database: metrics file content against a brute-force ranking."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nhl.evaluation import evaluate_file, history_rows, pr_rows_csv
from nhl.models.hasher import save_hasher
from nhl.training import TrainConfig, train_model


@pytest.fixture(scope="module")
def saved_model(digits_splits, digits_manifest_dir, tmp_path_factory):
    config = TrainConfig(
        loss="csq",
        lengths=(8, 16),
        adaptive=True,
        backbone="smallcnn",
        backbone_params={"width": 8},
        batch_size=50,
        lr=3e-3,
        epochs=1,
    )
    workdir = tmp_path_factory.mktemp("eval")
    result = train_model(
        config, digits_splits.train, digits_splits.val, digits_splits.train, workdir / "ck", progress=False
    )
    path = workdir / "csq-nhl-A.pt"
    extra = {
        "model_id": "csq-nhl-A",
        "config": {"loss": "csq", "lengths": [8, 16]},
        "mode": config.mode,
        "epochs": result.epochs_run,
        "best_epoch": result.best_epoch,
        "train_seconds": result.train_seconds,
        "peak_memory_mb": result.peak_memory_mb,
        "history": result.history,
        "mlflow_run_id": None,
    }
    save_hasher(result.model, path, extra=extra)
    return path, result.model


def brute_force_map(q, ql, d, dl) -> float:
    """Per-query loop: stable sort by Hamming distance, AP over all relevant items."""
    aps = []
    for i in range(len(q)):
        dist = [(int((q[i] != d[j]).sum()), j) for j in range(len(d))]
        order = [j for _, j in sorted(dist, key=lambda t: t[0])]
        hits, precisions = 0, []
        for rank, j in enumerate(order, start=1):
            if (ql[i] * dl[j]).sum() > 0:
                hits += 1
                precisions.append(hits / rank)
        aps.append(np.mean(precisions) if precisions else 0.0)
    return float(np.mean(aps))


def test_metrics_record_matches_a_brute_force_ranking(saved_model, digits_manifest_dir, digits_splits):
    path, model = saved_model
    record, pr_rows, history = evaluate_file(path, digits_manifest_dir, pr_lengths=(16,))
    assert record["model_id"] == "csq-nhl-A" and record["loss"] == "csq" and record["variant"] == "nhl-A"
    assert set(record["bits"]) == {"8", "16"}
    assert set(record["bits"]["8"]) == {"map", "p_at_100", "p_at_r2"}
    with torch.no_grad():
        q = torch.cat([model.encode(torch.stack([digits_splits.query[i][0] for i in range(len(digits_splits.query))]))])
        d = model.encode(torch.stack([digits_splits.database[i][0] for i in range(len(digits_splits.database))]))
    ql, dl = digits_splits.query.labels.numpy(), digits_splits.database.labels.numpy()
    subset = slice(0, 20)  # the loop is slow: check the first 20 queries' mean AP through the library's input order
    for k in (8, 16):
        expected = brute_force_map(q[subset, :k].numpy(), ql[subset], d[:, :k].numpy(), dl)
        from nhl.metrics import mean_average_precision

        assert mean_average_precision(q[subset, :k], ql[subset], d[:, :k], dl) == pytest.approx(expected, abs=1e-12)
    assert {row["bits"] for row in pr_rows} == {16} and len(pr_rows) == 17
    recalls = [row["recall"] for row in pr_rows]
    assert recalls == sorted(recalls) and recalls[-1] == pytest.approx(1.0)
    assert len(history) == 1 and "weight_0" in history[0] and "val_map_16" in history[0]


def test_full_query_set_map_equals_brute_force(saved_model, digits_manifest_dir, digits_splits):
    path, model = saved_model
    record, _, _ = evaluate_file(path, digits_manifest_dir)
    with torch.no_grad():
        q = model.encode(torch.stack([digits_splits.query[i][0] for i in range(len(digits_splits.query))]))
        d = model.encode(torch.stack([digits_splits.database[i][0] for i in range(len(digits_splits.database))]))
    expected = brute_force_map(
        q[:, :8].numpy(), digits_splits.query.labels.numpy(), d[:, :8].numpy(), digits_splits.database.labels.numpy()
    )
    assert record["bits"]["8"]["map"] == pytest.approx(expected, abs=1e-12)


def test_pr_csv_and_history_rows_are_flat():
    text = pr_rows_csv([{"bits": 16, "radius": 0, "precision": 0.5, "recall": 0.25}])
    assert text == "bits,radius,precision,recall\n16,0,0.500000,0.250000\n"
    rows = history_rows(
        {
            "history": [
                {
                    "epoch": 1,
                    "train_loss": 0.3,
                    "val_map": {"8": 0.4},
                    "val_map_mean": 0.4,
                    "weights": {"mean_weights": [1.2, 0.8], "reduced_fraction": 0.5},
                }
            ]
        }
    )
    assert rows == [
        {
            "epoch": 1,
            "train_loss": 0.3,
            "val_map_8": 0.4,
            "val_map_mean": 0.4,
            "weight_0": 1.2,
            "weight_1": 0.8,
            "weights_reduced_fraction": 0.5,
        }
    ]


def test_a_model_for_other_images_is_refused(saved_model, tmp_path, digits_manifest_dir):
    from nhl.models.hasher import Hasher, HasherSpec

    other = Hasher(HasherSpec("smallcnn", 3, (8,), {"width": 8}))
    save_hasher(other, tmp_path / "rgb.pt", extra={"model_id": "rgb"})
    with pytest.raises(ValueError, match="expects 3-channel images"):
        evaluate_file(tmp_path / "rgb.pt", digits_manifest_dir)
