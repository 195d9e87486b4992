"""The model registry: names, model specs, provenance tags, and serving a version by alias.

A model trained for 0 epochs (the untrained initial model: cheap, and its codes are as good a
fingerprint as any) is logged to a temporary sqlite store and registered through the gate; the
references (content hash, params hash, metrics, codes of the checkpoint file) are read or
computed here independently of the registry code.
"""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import torch

from nhl.registry import load_model_version, model_name, parse_model_spec, state_sha256
from nhl.registry import versions as v

SECTION = {
    "backbone": "smallcnn",
    "backbone_params": {"width": 8},
    "lengths": [8, 16],
    "epochs": 0,
    "batch_size": 50,
    "lr": 0.003,
    "seed": 0,
}
NAME = "nhl-digits-csq"


@pytest.fixture(scope="module")
def registered(tmp_path_factory, digits_manifest_dir, fresh_store):
    """A temporary store holding one version (champion) of NAME, trained and evaluated on digits."""
    from nhl.evaluation import evaluate_file
    from nhl.experiment import build_train_config, train_from_manifest
    from nhl.promotion import register_and_promote
    from nhl.tracking import ModelRun

    root = tmp_path_factory.mktemp("registry")
    with pytest.MonkeyPatch.context() as mp:
        uri = fresh_store(root / "mlruns.db")
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        mp.chdir(root)
        config = build_train_config(SECTION, "csq", "nhl-full")
        path = root / "models" / "csq-nhl-full.pt"
        train_from_manifest(config, digits_manifest_dir, path, "csq-nhl-full", progress=False)
        record, _, _ = evaluate_file(path, digits_manifest_dir, pr_lengths=())
        with ModelRun("csq-nhl-full", resume=record["mlflow_run_id"]) as run:
            run.log_results(record["bits"])
        meta = json.loads((digits_manifest_dir / "manifest.json").read_text())
        validation = {
            "success": True,
            "failed": [],
            "content_hash": meta["content_hash"],
            "checks": [{"check": "a", "success": True}, {"check": "b", "success": True}],
        }
        decision = register_and_promote(path, NAME, validation, record)
        yield {
            "root": root,
            "path": path,
            "record": record,
            "meta": meta,
            "validation": validation,
            "decision": decision,
        }


def test_model_name_formats_the_template_and_rejects_bad_fields():
    assert model_name("nhl-{dataset}-{loss}", dataset="cifar10", loss="csq") == "nhl-cifar10-csq"
    assert model_name("{dataset}.{variant}", dataset="digits", variant="nhl-full") == "digits.nhl-full"
    with pytest.raises(ValueError, match=r"unknown field \{size\}.*known fields: dataset, loss"):
        model_name("nhl-{size}", dataset="digits")
    with pytest.raises(ValueError, match="must hold only letters"):
        model_name("nhl {dataset}", dataset="digits")


@pytest.mark.parametrize(
    "spec, expected",
    [
        ("champion", (None, "champion")),
        ("challenger", (None, "challenger")),
        ("models:/nhl-digits-csq@champion", ("nhl-digits-csq", "champion")),
        ("models:/nhl-digits-csq/3", ("nhl-digits-csq", "3")),
        ("models/csq-nhl-full.pt", None),
        ("champion.pt", None),
    ],
)
def test_parse_model_spec(spec, expected):
    assert parse_model_spec(spec) == expected


def test_parse_model_spec_rejects_a_malformed_models_uri():
    with pytest.raises(ValueError, match=r"models:/<name>@<alias> or models:/<name>/<version>"):
        parse_model_spec("models:/nhl-digits-csq")


def test_ids_hash_the_content_not_the_key_order():
    result = {"success": True, "content_hash": "sha256:ab", "checks": [{"x": 1}]}
    reference = (
        "sha256:" + hashlib.sha256(b'{"checks":[{"x":1}],"content_hash":"sha256:ab","success":true}').hexdigest()
    )
    assert v.validation_id(result) == reference
    assert v.validation_id(dict(reversed(list(result.items())))) == reference
    assert v.validation_id({**result, "success": False}) != reference


def test_version_carries_the_provenance_tags(registered):
    import mlflow

    decision = registered["decision"]
    assert decision.registered and decision.promoted and decision.version == 1
    client = mlflow.MlflowClient(f"sqlite:///{registered['root'] / 'mlruns.db'}")
    version = client.get_model_version(NAME, "1")
    run = client.get_run(registered["record"]["mlflow_run_id"])
    tags = version.tags
    assert version.run_id == run.info.run_id
    assert tags["nhl.data.content_hash"] == registered["meta"]["content_hash"]
    assert tags["nhl.data.protocol"] == "digits" and tags["nhl.data.dataset"] == "digits"
    params_text = json.dumps(dict(run.data.params), sort_keys=True, separators=(",", ":"))
    assert tags["nhl.params_hash"] == "sha256:" + hashlib.sha256(params_text.encode()).hexdigest()
    assert tags["nhl.validation.success"] == "true" and tags["nhl.validation.checks"] == "2"
    assert tags["nhl.validation.id"] == v.validation_id(registered["validation"])
    for k in ("8", "16"):
        for metric in ("map", "p_at_100", "p_at_r2"):
            assert float(tags[f"{metric}_{k}"]) == registered["record"]["bits"][k][metric]
    assert tags["nhl.lengths"] == "8,16" and tags["nhl.eval.topk"] == "all"
    assert tags["nhl.promotion.decision"] == "champion"
    assert client.get_model_version_by_alias(NAME, "champion").version == 1


def test_champion_gives_the_same_codes_as_the_checkpoint(registered, digits_splits):
    from nhl.models.hasher import load_hasher

    images = torch.stack([digits_splits.query[i][0] for i in range(40)])
    direct, _ = load_hasher(registered["path"])
    expected = direct.encode(images).numpy()
    for name, ref in ((None, "champion"), (NAME, "champion"), (NAME, 1)):
        model, extra = load_model_version(name, ref)
        np.testing.assert_array_equal(model.encode(images).numpy(), expected)
        assert extra["model_uri"] == f"models:/{NAME}/1" and extra["version"] == 1
        assert extra["mlflow_run_id"] == registered["record"]["mlflow_run_id"]
        assert extra["model_id"] == "csq-nhl-full" and extra["aliases"] == ["champion"]
    assert extra["sha256"] == state_sha256(direct)
    assert set(np.unique(expected)) <= {-1, 1} and expected.shape == (40, 16)


def test_unknown_names_and_aliases_are_clear_errors(registered):
    with pytest.raises(ValueError, match=r"registered model 'nhl-nope' not found .*nhl models: nhl-digits-csq"):
        load_model_version("nhl-nope", "champion")
    with pytest.raises(ValueError, match=r"has no alias 'challenger' \(aliases: champion \(v1\)\)"):
        load_model_version(NAME, "challenger")
    with pytest.raises(ValueError, match=r"has no version 7"):
        load_model_version(NAME, 7)
    with pytest.raises(ValueError, match=r"no registered nhl model has a 'challenger' version"):
        load_model_version(None, "challenger")
