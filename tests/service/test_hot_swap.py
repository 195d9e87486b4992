"""A running `nhl serve` on `champion` picks up a newly promoted version without a restart, and
no request fails while it swaps.

Two versions of one registered model (0-epoch models of different seeds: different weights, so
different codes) go through the real gate (`register_and_promote`). The reference answers after
the swap are recomputed from `nhl encode --model models:/<name>/2` and a numpy Hamming scan.
"""

from __future__ import annotations

import json
import threading
import time

import numpy as np
import pytest
import requests

import nhl.cli
from nhl.codes import load_codes

from .conftest import LiveServer

NAME = "nhl-digits-csq"


def section(seed: int) -> dict:
    return {
        "backbone": "smallcnn",
        "backbone_params": {"width": 8},
        "lengths": [8, 16],
        "epochs": 0,
        "batch_size": 50,
        "lr": 0.003,
        "seed": seed,
    }


def train_and_promote(root, manifest, seed: int, tolerance: float):
    from nhl.evaluation import evaluate_file
    from nhl.experiment import build_train_config, train_from_manifest
    from nhl.promotion import register_and_promote
    from nhl.tracking import ModelRun

    path = root / "models" / f"seed{seed}" / "csq-nhl-full.pt"
    train_from_manifest(
        build_train_config(section(seed), "csq", "nhl-full"), manifest, path, "csq-nhl-full", progress=False
    )
    record, _, _ = evaluate_file(path, manifest, pr_lengths=())
    with ModelRun("csq-nhl-full", resume=record["mlflow_run_id"]) as run:
        run.log_results(record["bits"])
    meta = json.loads((manifest / "manifest.json").read_text())
    validation = {
        "success": True,
        "failed": [],
        "content_hash": meta["content_hash"],
        "checks": [{"check": "a", "success": True}],
    }
    return register_and_promote(path, NAME, validation, record, tolerance=tolerance)


@pytest.fixture
def store(tmp_path, monkeypatch, fresh_store, digits_manifest_dir):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", fresh_store(tmp_path / "mlruns.db"))
    monkeypatch.chdir(tmp_path)
    assert train_and_promote(tmp_path, digits_manifest_dir, seed=0, tolerance=0.01).promoted
    return tmp_path


def test_an_alias_that_does_not_exist_is_an_error_at_start_up(store, digits_manifest_dir, capsys):
    assert (
        nhl.cli.main(
            ["serve", "--model", f"models:/{NAME}@nosuch", "--manifest", str(digits_manifest_dir), "--poll", "0"]
        )
        == 2
    )
    err = capsys.readouterr().err.strip()
    assert err.startswith("nhl serve: error: registered model 'nhl-digits-csq' has no alias 'nosuch'")


def test_promoting_a_new_version_swaps_it_in_without_failed_requests(store, digits_manifest_dir):
    from nhl.service.app import create_app
    from nhl.service.engine import Engine, Source

    engine = Engine(Source(spec="champion", manifest=digits_manifest_dir, cache_dir=store / "cache"), poll_seconds=0.3)
    server = LiveServer(create_app(engine))
    items = [int(i) for i in engine.snapshot.queries.codes.ids[:5]]
    seen: list[tuple[int, int]] = []  # (status, version) of every answer, in order
    stop = threading.Event()

    def client(n: int) -> None:
        with requests.Session() as session:
            while not stop.is_set():
                got = session.get(f"{server.url}/search", params={"item": items[n], "bits": 16, "k": 10}, timeout=30)
                seen.append((got.status_code, got.json().get("model", {}).get("version") if got.ok else None))

    threads = [threading.Thread(target=client, args=(n,)) for n in range(3)]
    try:
        for t in threads:
            t.start()
        assert requests.get(f"{server.url}/health", timeout=10).json()["version"] == 1
        decision = train_and_promote(store, digits_manifest_dir, seed=1, tolerance=1.0)
        assert decision.promoted
        deadline = time.monotonic() + 120
        while requests.get(f"{server.url}/health", timeout=10).json()["version"] != 2:
            assert time.monotonic() < deadline, "the server never picked up version 2"
            time.sleep(0.2)
        time.sleep(1.0)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=30)
    try:
        statuses = {status for status, _ in seen}
        versions = [v for _, v in seen]
        assert statuses == {200}, statuses
        assert 1 in versions and versions[-1] == 2
        # later answers come from version 2: compare with codes encoded by `nhl encode` from v2
        for split in ("database", "query"):
            assert (
                nhl.cli.main(
                    [
                        "encode",
                        str(digits_manifest_dir),
                        "--model",
                        f"models:/{NAME}/2",
                        "--split",
                        split,
                        "--out",
                        str(store / f"v2-{split}.npz"),
                    ]
                )
                == 0
            )
        db, query = load_codes(store / "v2-database.npz"), load_codes(store / "v2-query.npz")
        row = int(np.flatnonzero(query.ids == items[0])[0])
        got = requests.get(f"{server.url}/search", params={"item": items[0], "bits": 16, "k": 10}, timeout=10).json()
        ref = (16 - query.codes(16)[row].astype(int) @ db.codes(16).T.astype(int)) // 2
        pos = {int(i): p for p, i in enumerate(db.ids)}
        assert got["model"]["version"] == 2
        assert [r["distance"] for r in got["results"]] == sorted(ref)[:10]
        assert all(ref[pos[r["id"]]] == r["distance"] for r in got["results"])
    finally:
        server.stop()
        engine.close()
