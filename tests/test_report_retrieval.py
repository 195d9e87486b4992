"""Retrieval examples of the comparison report: seeded queries, hits checked against a numpy
Hamming scan of codes encoded here with `Hasher.encode`, relevance against the labels, and the
grid drawn, embedded in comparison.md and listed in comparison.json."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from nhl.report.retrieval import collect_examples, pick_queries


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory, digits_splits):
    """models/csq-nhl-full.pt (lengths 8, 16) and models/csq-baseline-8.pt, 1 epoch each; no baseline-16."""
    from nhl.models.hasher import save_hasher
    from nhl.training import TrainConfig, train_model

    root = tmp_path_factory.mktemp("retrieval") / "models"
    for model_id, lengths in (("csq-nhl-full", (8, 16)), ("csq-baseline-8", (8,))):
        config = TrainConfig(
            loss="csq",
            lengths=lengths,
            backbone="smallcnn",
            backbone_params={"width": 8},
            epochs=1,
            batch_size=64,
            device="cpu",
            seed=0,
        )
        result = train_model(
            config, digits_splits.train, digits_splits.val, digits_splits.train, root.parent / model_id, progress=False
        )
        save_hasher(result.model, root / f"{model_id}.pt", extra={"model_id": model_id})
    return root


@pytest.fixture(scope="module")
def examples(models_dir, digits_manifest_dir):
    return collect_examples(
        models_dir, digits_manifest_dir, ["csq"], ["baseline-8", "baseline-16", "nhl-full"], queries=3, seed=5, topk=10
    )


def test_queries_are_seeded_draws_from_the_query_split(digits_splits):
    ids = digits_splits.query.item_ids
    first, again, other = pick_queries(ids, 3, 5), pick_queries(ids, 3, 5), pick_queries(ids, 3, 6)
    assert first == again != other and len(set(first)) == 3 and set(first) <= {int(i) for i in ids}


def test_hits_are_the_exact_top_k_with_true_relevance(examples, models_dir, digits_splits):
    from nhl.models.hasher import load_hasher

    entry = examples.data["losses"]["csq"]
    assert [q["id"] for q in entry["queries"]] == pick_queries(digits_splits.query.item_ids, 3, 5)
    assert entry["missing"] == ["csq-baseline-16"]
    assert [(r["model_id"], r["bits"]) for r in entry["rows"][::3]] == [
        ("csq-nhl-full", 8),
        ("csq-baseline-8", 8),
        ("csq-nhl-full", 16),
    ]
    db, qs = digits_splits.database, digits_splits.query
    db_images = torch.stack([db[i][0] for i in range(len(db))])
    for row in entry["rows"]:
        model, _ = load_hasher(models_dir / f"{row['model_id']}.pt")
        qi = int(np.flatnonzero(qs.item_ids == row["query"])[0])
        k = row["bits"]
        q = model.encode(qs[qi][0].unsqueeze(0)).numpy()[:, :k].astype(np.int64)
        d = model.encode(db_images).numpy()[:, :k].astype(np.int64)
        ref = ((k - q @ d.T) // 2)[0]
        pos = {int(i): p for p, i in enumerate(db.item_ids)}
        hits = row["hits"]
        assert [h["distance"] for h in hits] == sorted(ref.tolist())[:10]
        assert all(ref[pos[h["id"]]] == h["distance"] for h in hits)
        labels = db.labels.numpy()
        assert [h["relevant"] for h in hits] == [bool(labels[pos[h["id"]]] @ qs.labels.numpy()[qi] > 0) for h in hits]


def test_report_draws_embeds_and_lists_the_grid(examples, tmp_path):
    from PIL import Image

    from nhl.report import build_report, write_report

    (tmp_path / "metrics").mkdir()
    report = build_report(
        tmp_path / "metrics", tmp_path / "plots", losses=["csq"], variants=["nhl-full"], examples=examples
    )
    paths = write_report(report, tmp_path / "reports", map_csv=None)
    md = paths["markdown"].read_text()
    data = json.loads(paths["json"].read_text())
    assert data["figures"]["csq"]["retrieval"] == "figures/csq-retrieval.png"
    assert data["retrieval"]["losses"]["csq"]["rows"] == examples.data["losses"]["csq"]["rows"]
    with Image.open(tmp_path / "reports" / "figures" / "csq-retrieval.png") as image:
        pixels = np.asarray(image.convert("RGB")).reshape(-1, 3)
    green = np.all(pixels == (42, 157, 58), axis=1).sum()
    red = np.all(pixels == (214, 40, 40), axis=1).sum()
    n_rel = sum(h["relevant"] for r in examples.data["losses"]["csq"]["rows"] for h in r["hits"])
    assert (green > 0) == (n_rel > 0) and red > 0
    assert "### Retrieval examples" in md and "![csq: retrieved items per code length](figures/csq-retrieval.png)" in md
    assert "Not drawn (no model file): `csq-baseline-16`" in md


def test_a_variant_not_in_the_models_is_a_one_line_error(models_dir, digits_manifest_dir):
    with pytest.raises(ValueError, match=r"^report.examples.variant: 'nhl-x' is not one of models.variants"):
        collect_examples(models_dir, digits_manifest_dir, ["csq"], ["nhl-full"], nested="nhl-x")
