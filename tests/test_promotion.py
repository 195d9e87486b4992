"""The promotion gate end to end on tiny digits models in a temporary sqlite store.

Model A trains for 1 epoch, model B for 0 epochs (the untrained initial model: deliberately
worse), model C for 0 epochs on another split of the same data. Expected decisions are derived
here from the evaluate records (plain comparisons), and the champion's re-evaluation on a new
split is checked against scoring its checkpoint file directly.
"""

from __future__ import annotations

import json

import pytest

from nhl.promotion import LengthRow, compare_maps, register_and_promote, write_report

SECTION = {
    "backbone": "smallcnn",
    "backbone_params": {"width": 8},
    "lengths": [8, 16],
    "epochs": 1,
    "batch_size": 50,
    "lr": 0.003,
    "seed": 0,
}
NAME = "nhl-digits-csq"
TOL = 0.01


def maps(record: dict) -> dict[int, float]:
    return {int(k): values["map"] for k, values in record["bits"].items()}


@pytest.fixture(scope="module")
def world(tmp_path_factory, digits_manifest_dir, fresh_store):
    """Models A (1 epoch), B (0 epochs) on the split, C (0 epochs) on split 2; A then B through the gate."""
    from nhl.data.manifest import read_manifest, write_manifest
    from nhl.data.sources import load
    from nhl.data.splits import get_protocol, make_split
    from nhl.data.validation import validate_manifest
    from nhl.evaluation import evaluate_file
    from nhl.experiment import build_train_config, train_from_manifest
    from nhl.tracking import ModelRun

    root = tmp_path_factory.mktemp("promotion")
    _, meta = read_manifest(digits_manifest_dir)
    frame2, meta2 = make_split(load("digits"), get_protocol("digits"), seed=1)
    split2 = root / "splits2"
    write_manifest(split2, frame2, {**meta2, "raw_dir": meta["raw_dir"]})
    with pytest.MonkeyPatch.context() as mp:
        uri = fresh_store(root / "mlruns.db")
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        mp.chdir(root)
        world = {"root": root, "split": digits_manifest_dir, "split2": split2, "uri": uri}
        for key, epochs, manifest in (("A", 1, digits_manifest_dir), ("B", 0, digits_manifest_dir), ("C", 0, split2)):
            path = root / "models" / f"{key}.pt"
            config = build_train_config({**SECTION, "epochs": epochs}, "csq", "nhl-full")
            train_from_manifest(config, manifest, path, "csq-nhl-full", progress=False)
            record, _, _ = evaluate_file(path, manifest, pr_lengths=())
            with ModelRun("csq-nhl-full", resume=record["mlflow_run_id"]) as run:
                run.log_results(record["bits"])
            world[key] = {"path": path, "record": record}
        world["validation"] = validate_manifest(digits_manifest_dir).to_dict()
        world["validation2"] = validate_manifest(split2).to_dict()
        assert world["validation"]["success"] and world["validation2"]["success"]
        world["d1"] = register_and_promote(world["A"]["path"], NAME, world["validation"], world["A"]["record"], TOL)
        world["d2"] = register_and_promote(world["B"]["path"], NAME, world["validation"], world["B"]["record"], TOL)
        yield world


def client(world):
    import mlflow

    return mlflow.MlflowClient(world["uri"])


def versions(world, name: str = NAME) -> list[int]:
    return sorted(int(mv.version) for mv in client(world).search_model_versions(f"name = '{name}'"))


# -- the comparison rule ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "new, champion, expected_ok",
    [
        ({8: 0.50, 16: 0.60}, {8: 0.505, 16: 0.61}, [True, True]),  # 0.005 and exactly 0.01 below: allowed
        ({8: 0.50, 16: 0.60}, {8: 0.52, 16: 0.40}, [False, True]),  # 0.02 below at 8 bits
        ({8: 0.70}, {8: 0.60, 32: 0.50}, [True, False]),  # lacks the champion's 32 bits
        ({8: 0.60, 64: 0.70}, {8: 0.60}, [True, True]),  # a new length passes, uncompared
    ],
)
def test_compare_maps(new, champion, expected_ok):
    rows, failures = compare_maps(new, champion, TOL)
    lengths = sorted(set(new) | set(champion))
    assert [row.bits for row in rows] == lengths
    assert [row.ok for row in rows] == expected_ok
    assert len(failures) == expected_ok.count(False)
    for row in rows:
        assert (row.new_map, row.champion_map) == (new.get(row.bits), champion.get(row.bits))
        if row.bits in new and row.bits in champion:
            assert row.delta == pytest.approx(new[row.bits] - champion[row.bits])


def test_compare_maps_rejects_a_negative_tolerance():
    with pytest.raises(ValueError, match="tolerance: expected a number >= 0"):
        compare_maps({8: 0.5}, {8: 0.5}, -0.1)


# -- the gate on trained models ---------------------------------------------------------------------
def test_first_version_is_champion_and_a_worse_one_only_challenger(world):
    a, b = maps(world["A"]["record"]), maps(world["B"]["record"])
    assert any(b[k] < a[k] - TOL for k in a), "the untrained model should be worse than the trained one"
    d1, d2 = world["d1"], world["d2"]
    assert (d1.registered, d1.promoted, d1.alias, d1.version, d1.champion_before) == (True, True, "champion", 1, None)
    assert [(row.bits, row.new_map) for row in d1.rows] == sorted(a.items())
    assert (d2.registered, d2.promoted, d2.alias, d2.version, d2.champion_before) == (True, False, "challenger", 2, 1)
    assert [(row.bits, row.new_map, row.champion_map) for row in d2.rows] == [(k, b[k], a[k]) for k in sorted(a)]
    assert [row.ok for row in d2.rows] == [b[k] >= a[k] - TOL for k in sorted(a)]
    worse = [k for k in sorted(a) if b[k] < a[k] - TOL]
    assert all(f"mAP at {k} bits" in d2.reason for k in worse)
    assert "same split" in d2.comparison
    c = client(world)
    assert c.get_model_version_by_alias(NAME, "champion").version == 1  # unchanged
    assert c.get_model_version_by_alias(NAME, "challenger").version == 2
    assert versions(world) == [1, 2]


def test_decision_is_logged_to_mlflow_and_the_report(world, tmp_path):
    c = client(world)
    run_id = world["B"]["record"]["mlflow_run_id"]
    version = c.get_model_version(NAME, "2")
    assert version.tags["nhl.promotion.decision"] == "challenger"
    assert version.tags["nhl.promotion.reason"] == world["d2"].reason
    assert version.tags["nhl.promotion.compared_with"] == "version 1"
    assert c.get_run(run_id).data.tags["nhl.promotion.decision"] == "challenger"
    with open(c.download_artifacts(run_id, "promotion/decision.json", str(tmp_path))) as fh:
        logged = json.load(fh)
    assert (logged["reason"], logged["version"], logged["alias"]) == (world["d2"].reason, 2, "challenger")
    with open(c.download_artifacts(run_id, "promotion/promotion.md", str(tmp_path))) as fh:
        report_md = fh.read()
    assert "**challenger** (not promoted)" in report_md

    path = tmp_path / "reports" / "promotion.md"
    write_report(path, [world["d1"], world["d2"]])
    text = path.read_text()
    a, b = maps(world["A"]["record"]), maps(world["B"]["record"])
    assert "## nhl-digits-csq: version 1 is **champion**" in text
    for k in sorted(a):
        assert f"| {k} | {b[k]:.4f} | {a[k]:.4f} | {b[k] - a[k]:+.4f} | **no** |" in text
    assert [p.name for p in path.parent.iterdir()] == ["promotion.md"]  # no temp file left


def test_rerun_of_a_registered_run_adds_no_version(world):
    again = register_and_promote(world["B"]["path"], NAME, world["validation"], world["B"]["record"], TOL)
    assert again.reused and again.version == 2 and again.alias == "challenger" and not again.promoted
    assert "already registered as version 2" in again.reason
    assert versions(world) == [1, 2]


def test_failed_validation_registers_nothing(world):
    failed = {**world["validation"], "success": False, "failed": ["split sizes as the protocol says"]}
    decision = register_and_promote(world["A"]["path"], "nhl-digits-csq-failed", failed, world["A"]["record"], TOL)
    assert (decision.registered, decision.promoted, decision.version, decision.alias) == (False, False, None, None)
    assert "data validation failed (split sizes as the protocol says)" in decision.reason
    assert "nhl-digits-csq-failed" not in [m.name for m in client(world).search_registered_models()]


def test_validation_of_other_data_registers_nothing(world):
    decision = register_and_promote(
        world["A"]["path"], "nhl-digits-csq-other", world["validation2"], world["A"]["record"], TOL
    )
    assert not decision.registered
    assert world["validation2"]["content_hash"] in decision.reason and "nothing registered" in decision.reason
    assert "nhl-digits-csq-other" not in [m.name for m in client(world).search_registered_models()]


def test_champion_of_another_split_is_reevaluated_on_the_new_one(world):
    from nhl.evaluation import evaluate_file

    name = "nhl-digits-csq-newsplit"
    register_and_promote(world["A"]["path"], name, world["validation"], world["A"]["record"], TOL)
    refused = register_and_promote(world["C"]["path"], name, world["validation2"], world["C"]["record"], TOL)
    assert not refused.promoted and refused.alias == "challenger" and refused.comparison == "refused"
    assert "no manifest was given" in refused.reason and refused.rows == []

    name = "nhl-digits-csq-newsplit2"
    register_and_promote(world["A"]["path"], name, world["validation"], world["A"]["record"], TOL)
    decision = register_and_promote(
        world["C"]["path"], name, world["validation2"], world["C"]["record"], TOL, manifest=world["split2"]
    )
    a_on_2, _, _ = evaluate_file(world["A"]["path"], world["split2"], pr_lengths=())  # the reference
    expected = maps(a_on_2)
    c = maps(world["C"]["record"])
    assert "re-evaluated" in decision.comparison
    assert [(row.bits, row.new_map) for row in decision.rows] == sorted(c.items())
    assert [row.champion_map for row in decision.rows] == pytest.approx([expected[k] for k in sorted(c)])
    assert decision.promoted == all(c[k] >= expected[k] - TOL for k in c)

    wrong = register_and_promote(
        world["C"]["path"], "nhl-digits-csq-newsplit3", world["validation2"], world["C"]["record"], TOL
    )  # first version: nothing to compare
    assert wrong.promoted
    mismatch = register_and_promote(
        world["A"]["path"],
        "nhl-digits-csq-newsplit3",
        world["validation"],
        world["A"]["record"],
        TOL,
        manifest=world["split2"],
    )
    assert mismatch.comparison == "refused" and "not this version's" in mismatch.reason


def test_a_large_enough_tolerance_promotes_the_worse_model(world):
    name = "nhl-digits-csq-tolerant"
    register_and_promote(world["A"]["path"], name, world["validation"], world["A"]["record"], TOL)
    decision = register_and_promote(world["B"]["path"], name, world["validation"], world["B"]["record"], 1.0)
    assert decision.promoted and decision.alias == "champion" and decision.champion_before == 1
    assert all(isinstance(row, LengthRow) and row.ok for row in decision.rows)
    c = client(world)
    assert c.get_model_version_by_alias(name, "champion").version == 2
    assert c.get_model_version(name, "1").aliases == []


def test_bad_inputs_are_one_line_errors(world, tmp_path):
    from nhl.models.hasher import load_hasher, save_hasher

    model, extra = load_hasher(world["B"]["path"])
    untracked = tmp_path / "untracked.pt"
    save_hasher(model, untracked, extra={**extra, "mlflow_run_id": None})
    with pytest.raises(ValueError, match=r"no MLflow run id \(trained with --no-track\?\)"):
        register_and_promote(untracked, NAME, world["validation"], world["B"]["record"])
    with pytest.raises(ValueError, match="does not belong to the model's run"):
        register_and_promote(world["B"]["path"], NAME, world["validation"], world["A"]["record"])
    with pytest.raises(FileNotFoundError, match="validation result .* does not exist"):
        register_and_promote(world["B"]["path"], NAME, tmp_path / "none.json", world["B"]["record"])
    with pytest.raises(ValueError, match="tolerance: expected a number >= 0"):
        register_and_promote(world["B"]["path"], NAME, world["validation"], world["B"]["record"], -1)


def test_candidates_follow_the_registry_settings_and_dvc_lock(tmp_path):
    import yaml

    from nhl.promotion import candidates_from_params

    lock = {
        "schema": "2.0",
        "stages": {
            "train@csq-nhl-full": {
                "deps": [
                    {"path": "nhl/training.py", "md5": "111"},
                    {"path": "data/splits", "hash": "md5", "md5": "abc.dir"},
                ]
            }
        },
    }
    (tmp_path / "dvc.lock").write_text(yaml.safe_dump(lock))
    found = candidates_from_params(
        {"dataset": "cifar10", "protocol": "cifar10-1"},
        {"losses": ["csq", "dpn"]},
        {"name": "nhl-{dataset}-{loss}", "variant": "nhl-full"},
        tmp_path,
    )
    assert [(c.name, c.model, c.metrics, c.dvc_md5) for c in found] == [
        (
            "nhl-cifar10-csq",
            tmp_path / "models" / "csq" / "csq-nhl-full.pt",  # the per-loss layout (nhl/layout.py)
            tmp_path / "metrics" / "csq" / "csq-nhl-full.json",
            "abc.dir",
        ),
        (
            "nhl-cifar10-dpn",
            tmp_path / "models" / "dpn" / "dpn-nhl-full.pt",
            tmp_path / "metrics" / "dpn" / "dpn-nhl-full.json",
            None,
        ),
    ]
    with pytest.raises(ValueError, match=r"registry.variant: expected the variant to register"):
        candidates_from_params({"dataset": "x"}, {"losses": ["csq"]}, {"name": "nhl-{dataset}"}, tmp_path)
    with pytest.raises(ValueError, match=r"registry.name: unknown field \{seed\}"):
        candidates_from_params(
            {"dataset": "x"}, {"losses": ["csq"]}, {"name": "nhl-{seed}", "variant": "nhl-A"}, tmp_path
        )
