"""`nhl encode`, `nhl search`, `nhl evaluate` end to end on a tiny model trained for one epoch on digits.

References are computed here: Hamming distances by a numpy dot product, rankings by a stable
sort, metrics with `nhl.metrics` on codes encoded in the test (and mAP once more by a plain loop).
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import nhl.cli
from nhl.codes import Codes, load_codes, save_codes

OURS = ("encode", "search", "evaluate")


@pytest.fixture(scope="module")
def env(tmp_path_factory, digits_splits):
    """A manifest on disk, a model file trained for 1 epoch, and the query images as PNG files."""
    from nhl.data.manifest import split_frame, write_manifest
    from nhl.data.raw import save_source
    from nhl.data.sources import load
    from nhl.models.hasher import save_hasher
    from nhl.training import TrainConfig, train_model

    root = tmp_path_factory.mktemp("cli")
    save_source(load("digits"), root / "raw")
    write_manifest(root / "splits", digits_splits.frame, {"num_classes": 10, "raw_dir": str(root / "raw")})
    config = TrainConfig(
        loss="csq",
        lengths=(8, 16),
        backbone="smallcnn",
        backbone_params={"width": 8},
        epochs=1,
        batch_size=64,
        device="cpu",
        seed=0,
    )
    result = train_model(
        config, digits_splits.train, digits_splits.val, digits_splits.train, root / "work", progress=False
    )
    extra = {
        "model_id": "csq-nhl-noA-noD",
        "config": asdict(config),
        "mode": config.mode,
        "epochs": 1,
        "best_epoch": result.best_epoch,
        "train_seconds": result.train_seconds,
        "peak_memory_mb": result.peak_memory_mb,
    }
    save_hasher(result.model, root / "model.pt", extra=extra)
    query = split_frame(digits_splits.frame, "query")
    for item_id, row in zip(query["item_id"], query["row"], strict=True):
        (root / "queries").mkdir(exist_ok=True)
        Image.fromarray(digits_splits.images[row]).save(root / "queries" / f"q{item_id:04d}.png")
    return root


@pytest.fixture
def cli():
    """`nhl ...` through the real entry point; the three subcommands must be registered."""
    assert set(OURS) <= set(nhl.cli.COMMAND_MODULES)

    def call(*argv) -> int:
        return nhl.cli.main([str(a) for a in argv])

    return call


def hamming(q: np.ndarray, d: np.ndarray) -> np.ndarray:
    """Reference distances (bits - q.x) / 2 of ±1 codes."""
    q, d = q.astype(np.int64), d.astype(np.int64)
    return (q.shape[1] - q @ d.T) // 2


def encoded(cli, env, split: str) -> Codes:
    path = env / f"{split}.npz"
    if not path.exists():
        assert cli("encode", env / "splits", "--model", env / "model.pt", "--split", split, "--out", path) == 0
    return load_codes(path)


def error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


# --------------------------------------------------------------------------- encode


def test_single_image_gives_the_same_code_as_in_a_batch(cli, env, capsys):
    assert (
        cli("encode", env / "queries", "--model", env / "model.pt", "--out", env / "folder.npz", "--batch-size", 32)
        == 0
    )
    folder = load_codes(env / "folder.npz")
    names = sorted(p.name for p in (env / "queries").iterdir())
    assert list(folder.names) == names and folder.bits == 16 and folder.lengths == [8, 16]
    np.testing.assert_array_equal(folder.ids, np.arange(len(names)))
    for i in (0, 37, len(names) - 1):
        assert cli("encode", env / "queries" / names[i], "--model", env / "model.pt", "--out", env / "one.npz") == 0
        one = load_codes(env / "one.npz")
        assert len(one) == 1 and list(one.names) == [names[i]]
        np.testing.assert_array_equal(one.codes(), folder.codes()[i : i + 1])
    # the files hold the query split's pixels: same codes as encoding the manifest split
    split = encoded(cli, env, "query")
    order = np.argsort([f"q{i:04d}.png" for i in split.ids])
    np.testing.assert_array_equal(split.codes()[order], folder.codes())
    assert "encode: 100 codes of 16 bits" in capsys.readouterr().out


def test_encode_uses_eval_mode_even_for_a_model_left_in_training_mode(env, digits_splits):
    from nhl.models.hasher import load_hasher

    model, _ = load_hasher(env / "model.pt")
    model.train()  # BatchNorm would use batch statistics here
    images = torch.stack([digits_splits.query[i][0] for i in range(20)])
    batch = model.encode(images)
    singles = torch.cat([model.encode(images[i : i + 1]) for i in range(20)])
    assert torch.equal(batch, singles) and model.training


def test_manifest_codes_match_the_model_and_keep_ids_and_labels(cli, env, digits_splits):
    from nhl.models.hasher import load_hasher

    db = encoded(cli, env, "database")
    model, _ = load_hasher(env / "model.pt")
    images = torch.stack([digits_splits.database[i][0] for i in range(len(digits_splits.database))])
    with torch.no_grad():
        raw = model.head.linear(model.features(images)).numpy()
    np.testing.assert_array_equal(db.codes(), np.where(raw >= 0, 1, -1))
    np.testing.assert_array_equal(db.ids, digits_splits.database.item_ids)
    np.testing.assert_array_equal(db.labels, digits_splits.database.labels.numpy())
    assert db.model["model_id"] == "csq-nhl-noA-noD" and db.model["path"] == str((env / "model.pt").resolve())


# --------------------------------------------------------------------------- search


def search_json(cli, capsys, *argv) -> dict:
    assert cli("search", *argv, "--json") == 0
    return json.loads(capsys.readouterr().out)


def check_against_brute_force(result: dict, q_codes, db: Codes, bits: int, k: int, exact: bool = True) -> None:
    dist = hamming(q_codes[:, :bits], db.codes(bits))
    position = {int(item_id): n for n, item_id in enumerate(db.ids)}
    assert len(result["queries"]) == len(q_codes)
    for qi, query in enumerate(result["queries"]):
        ids = [r["id"] for r in query["results"]]
        got = [r["distance"] for r in query["results"]]
        assert got == [int(dist[qi, position[i]]) for i in ids]  # distances exact
        assert got == sorted(got) and len(set(ids)) == len(ids)
        if exact:
            ref = np.sort(dist[qi], kind="stable")[:k]
            assert got == ref.tolist()  # the k smallest distances
            kth = ref[-1]
            must = {int(db.ids[j]) for j in np.flatnonzero(dist[qi] < kth)}
            assert must <= set(ids)  # ids up to ties at the k-th


@pytest.mark.parametrize("index, bits", [("flat", None), ("flat", 8), ("funnel", None)])
def test_search_query_codes_equals_brute_force(cli, env, capsys, index, bits):
    """The funnel's default pools exceed this database, so it must be exact too."""
    db, queries = encoded(cli, env, "database"), encoded(cli, env, "query")
    extra = [] if bits is None else ["--bits", bits]
    result = search_json(
        cli, capsys, env / "database.npz", "--query-codes", env / "query.npz", "-k", 25, "--index", index, *extra
    )
    assert result["bits"] == (bits or 16) and result["index"] == index
    assert [q["query"] for q in result["queries"]] == [int(i) for i in queries.ids]
    check_against_brute_force(result, queries.codes(), db, bits or 16, 25)


def test_funnel_with_small_pools_and_hash_return_true_distances(cli, env, capsys):
    db, queries = encoded(cli, env, "database"), encoded(cli, env, "query")
    for argv in (["--index", "funnel", "--stages", "8,16", "--pools", "40"], ["--index", "hash", "--nflip", "1"]):
        result = search_json(cli, capsys, env / "database.npz", "--query-codes", env / "query.npz", "-k", 10, *argv)
        check_against_brute_force(result, queries.codes(), db, 16, 10, exact=False)
        assert sum(len(q["results"]) for q in result["queries"]) > 0


def test_search_with_query_images_uses_the_recorded_model(cli, env, capsys):
    db, queries = encoded(cli, env, "database"), encoded(cli, env, "query")
    result = search_json(cli, capsys, env / "database.npz", env / "queries", "-k", 5, "--bits", 8)
    names = sorted(p.name for p in (env / "queries").iterdir())
    assert [q["query"].rsplit("/", 1)[-1] for q in result["queries"]] == names
    by_name = {f"q{i:04d}.png": n for n, i in enumerate(queries.ids)}
    q_codes = queries.codes()[[by_name[name] for name in names]]
    check_against_brute_force(result, q_codes, db, 8, 5)


def test_search_prints_a_table_with_each_result_labels(cli, env, capsys, digits_splits):
    encoded(cli, env, "database")
    query = sorted((env / "queries").iterdir())[0]
    assert cli("search", env / "database.npz", query, "-k", 3) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["query", "rank", "id", "distance", "labels"]
    assert [line.split()[1] for line in lines[1:]] == ["1", "2", "3"]
    assert all(line.split()[0] == str(query) for line in lines[1:])
    label_of = dict(
        zip(digits_splits.frame["item_id"], digits_splits.frame["labels"], strict=True)
    )  # the manifest's strings
    assert all(line.split()[4] == label_of[int(line.split()[2])] for line in lines[1:])


def test_codes_and_query_options_name_the_same_as_the_positionals(cli, env, capsys):
    encoded(cli, env, "database")
    queries = sorted((env / "queries").iterdir())[:3]
    positional = search_json(cli, capsys, env / "database.npz", *queries, "-k", 4)
    as_options = search_json(
        cli,
        capsys,
        "--codes",
        env / "database.npz",
        "--query",
        queries[0],
        "--query",
        queries[1],
        "--query",
        queries[2],
        "-k",
        4,
    )
    codes_option = search_json(cli, capsys, *queries, "--codes", env / "database.npz", "-k", 4)
    assert as_options == positional == codes_option and len(positional["queries"]) == 3
    # and `--manifest DIR` encodes the same split as the positional directory
    assert cli("encode", "--manifest", env / "splits", "--model", env / "model.pt", "--out", env / "m.npz") == 0
    by_option, by_position = load_codes(env / "m.npz"), encoded(cli, env, "database")
    np.testing.assert_array_equal(by_option.packed, by_position.packed)
    np.testing.assert_array_equal(by_option.ids, by_position.ids)


def test_search_of_file_based_data_prints_image_paths_and_labels(cli, env, capsys, digits_splits, tmp_path):
    """A manifest with a `path` column: each result names its image file and its labels."""
    from nhl.data.manifest import split_frame, write_manifest

    query = split_frame(digits_splits.frame, "query")
    frame = query.assign(path=[f"q{i:04d}.png" for i in query["item_id"]], split="database").drop(columns="row")
    write_manifest(tmp_path / "files", frame, {"num_classes": 10, "root": str(env / "queries")})
    assert (
        cli("encode", "--manifest", tmp_path / "files", "--model", env / "model.pt", "--out", tmp_path / "files.npz")
        == 0
    )
    one = env / "queries" / frame["path"].iloc[0]
    capsys.readouterr()
    result = search_json(cli, capsys, tmp_path / "files.npz", one, "-k", 3)
    top = result["queries"][0]["results"]
    label_of = dict(zip(frame["item_id"], frame["labels"], strict=True))
    for item in top:
        assert item["name"] == str(env / "queries" / f"q{item['id']:04d}.png") and Path(item["name"]).is_file()
        assert " ".join(map(str, item["labels"])) == label_of[item["id"]]
    assert top[0]["distance"] == 0 and top[0]["name"] == str(one)  # the query image itself, first
    assert cli("search", tmp_path / "files.npz", one, "-k", 3) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["query", "rank", "id", "distance", "labels", "path"]
    assert [line.split()[-1] for line in lines[1:]] == [item["name"] for item in top]


# --------------------------------------------------------------------------- evaluate


def reference_map(q, ql, d, dl) -> float:
    """Plain per-query loop: stable sort by distance, AP over the whole database."""
    dist = hamming(q, d)
    aps = []
    for i in range(len(q)):
        rel = (dl @ ql[i] > 0)[np.argsort(dist[i], kind="stable")]
        hits = np.flatnonzero(rel)
        aps.append(np.mean(np.arange(1, len(hits) + 1) / (hits + 1)) if len(hits) else 0.0)
    return float(np.mean(aps))


def test_evaluate_writes_the_metrics_record(cli, env, capsys, digits_splits):
    from nhl.metrics import mean_average_precision, precision_at_k, precision_at_radius
    from nhl.models.hasher import load_hasher

    out = env / "metrics" / "m.json"
    assert (
        cli(
            "evaluate",
            "--model",
            env / "model.pt",
            "--manifest",
            env / "splits",
            "--out",
            out,
            "--pr-out",
            env / "pr.csv",
            "--pr-lengths",
            "8,16",
        )
        == 0
    )
    assert "evaluate: csq-nhl-noA-noD: mAP 8:" in capsys.readouterr().out
    record = json.loads(out.read_text())
    for key in ("model_id", "loss", "mode", "bits", "train_seconds", "peak_memory_mb", "epochs", "best_epoch"):
        assert key in record
    assert record["model_id"] == "csq-nhl-noA-noD" and record["loss"] == "csq" and record["mode"] == "nhl-noA-noD"
    assert set(record["bits"]) == {"8", "16"} and record["epochs"] == 1

    model, _ = load_hasher(env / "model.pt")

    def codes_of(ds):
        return model.encode(torch.stack([ds[i][0] for i in range(len(ds))])).numpy()

    q, d = codes_of(digits_splits.query), codes_of(digits_splits.database)
    ql, dl = digits_splits.query.labels.numpy(), digits_splits.database.labels.numpy()
    for k in (8, 16):
        values = record["bits"][str(k)]
        assert set(values) == {"map", "p_at_100", "p_at_r2"}
        assert values["map"] == pytest.approx(mean_average_precision(q[:, :k], ql, d[:, :k], dl), abs=1e-12)
        assert values["map"] == pytest.approx(reference_map(q[:, :k], ql, d[:, :k], dl), abs=1e-9)
        assert values["p_at_100"] == pytest.approx(precision_at_k(q[:, :k], ql, d[:, :k], dl, k=100), abs=1e-12)
        assert values["p_at_r2"] == pytest.approx(precision_at_radius(q[:, :k], ql, d[:, :k], dl, r=2), abs=1e-12)
    pr = (env / "pr.csv").read_text().splitlines()
    assert pr[0] == "bits,radius,precision,recall" and len(pr) == 1 + 9 + 17


def test_evaluate_without_out_prints_json_with_topk(cli, env, capsys):
    assert cli("evaluate", "--model", env / "model.pt", "--manifest", env / "splits", "--topk", 50) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["topk"] == 50 and set(record["bits"]) == {"8", "16"}


# --------------------------------------------------------------------------- bad input


def test_bad_inputs_are_one_line_errors(cli, env, capsys, tmp_path):
    from nhl.models.hasher import Hasher, HasherSpec, save_hasher

    encoded(cli, env, "database")
    encoded(cli, env, "query")
    db_path, model = env / "database.npz", env / "model.pt"
    wide = Hasher(HasherSpec("smallcnn", 1, (8, 32), {"width": 8}))
    save_hasher(wide, tmp_path / "wide.pt")
    save_codes(tmp_path / "q8.npz", Codes.from_codes(np.ones((2, 8), dtype=np.int8)))
    one_image = sorted((env / "queries").iterdir())[0]
    cases = [
        (
            ("encode", tmp_path / "nothing", "--model", model, "--out", tmp_path / "x.npz"),
            "source .*nothing does not exist",
        ),
        (
            ("encode", env / "queries", "--model", tmp_path / "no.pt", "--out", tmp_path / "x.npz"),
            "model file .*no.pt does not exist",
        ),
        (
            ("encode", env / "splits", "--model", model, "--split", "test", "--out", tmp_path / "x.npz"),
            "--split: unknown split 'test'",
        ),
        (("encode", env / "queries", "--model", model, "--out", tmp_path / "x.npz", "--batch-size", 0), "--batch-size"),
        (("encode", "--model", model, "--out", tmp_path / "x.npz"), "either as SOURCE or as --manifest DIR"),
        (
            ("encode", env / "queries", "--manifest", env / "splits", "--model", model, "--out", tmp_path / "x.npz"),
            "exactly one of them",
        ),
        (
            ("encode", "--manifest", env / "queries", "--model", model, "--out", tmp_path / "x.npz"),
            "--manifest .*queries: expected a split manifest directory",
        ),
        (("search", "--query", one_image), "codes: give the database codes file"),
        (("search", tmp_path / "none.npz", "--query-codes", env / "query.npz"), "codes file .*none.npz does not exist"),
        (("search", db_path, "--query-codes", tmp_path / "none.npz"), "codes file .*none.npz does not exist"),
        (
            ("search", db_path, "--query-codes", env / "query.npz", "--index", "lsh"),
            "--index: unknown index kind 'lsh'; known: flat, hash, funnel",
        ),
        (
            ("search", db_path, "--query-codes", tmp_path / "q8.npz"),
            "query codes file .*q8.npz: 8-bit codes, but codes file .*database.npz has 16-bit",
        ),
        (
            ("search", db_path, one_image, "--model", tmp_path / "wide.pt"),
            "--model .*wide.pt: gives 32-bit codes, but codes file .*database.npz has 16-bit",
        ),
        (("search", db_path, one_image, "--model", tmp_path / "no.pt"), "model file .*no.pt does not exist"),
        (("search", db_path, tmp_path / "no.png"), "image .*no.png does not exist"),
        (
            ("search", db_path, "--query-codes", env / "query.npz", "--bits", 12),
            "--bits: 12 is not a length .*lengths \\[8, 16\\]",
        ),
        (("search", db_path), "queries: give query image files/folders or --query-codes"),
        (("search", db_path, one_image, "--query-codes", env / "query.npz"), "exactly one of them"),
        (
            ("search", db_path, "--query-codes", env / "query.npz", "--index", "funnel", "--bits", 8),
            "--index funnel: needs",
        ),
        (
            ("search", db_path, "--query-codes", env / "query.npz", "--index", "funnel", "--stages", "8,12"),
            "--stages: the last stage must be the search length 16",
        ),
        (("search", db_path, "--query-codes", env / "query.npz", "-k", 0), "-k: expected a positive"),
        (
            ("search", env / "splits" / "manifest.csv", "--query-codes", env / "query.npz"),
            "manifest.csv: cannot be read",
        ),
        (
            ("evaluate", "--model", tmp_path / "no.pt", "--manifest", env / "splits"),
            "model file .*no.pt does not exist",
        ),
        (
            ("evaluate", "--model", model, "--manifest", tmp_path / "nosplits"),
            "manifest directory .*nosplits not found",
        ),
        (("evaluate", "--model", model, "--manifest", env / "splits", "--topk", 0), "--topk: expected a positive"),
    ]
    for argv, pattern in cases:
        assert cli(*argv) == 2, argv
        line = error_line(capsys)
        assert line.startswith(f"nhl {argv[0]}: error: ")
        assert re.search(pattern, line), (pattern, line)
    assert not (tmp_path / "x.npz").exists()


def test_other_model_of_the_same_width_warns(cli, env, capsys, tmp_path):
    from nhl.models.hasher import Hasher, HasherSpec, save_hasher

    encoded(cli, env, "database")
    torch.manual_seed(1)
    save_hasher(Hasher(HasherSpec("smallcnn", 1, (8, 16), {"width": 8})), tmp_path / "other.pt")
    one_image = sorted((env / "queries").iterdir())[0]
    assert cli("search", env / "database.npz", one_image, "--model", tmp_path / "other.pt", "-k", 2) == 0
    assert "is not the model that made codes file" in capsys.readouterr().err
