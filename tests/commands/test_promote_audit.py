"""`nhl promote`, `nhl audit` and pipelines/promote.py on a temporary project (digits, one loss).

The project holds what the pipeline would have written: the split manifest, the validation
gate's result.json, a model file (0 epochs, tracked in a temporary sqlite store) and its metrics
record. Expected values (run ids, experiment id, hashes, mAP) are read from those files and from
MLflow directly, and the validation id is recomputed here with hashlib.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import os
import re
import shutil
from pathlib import Path

import pytest
import yaml

from nhl.commands import audit, promote

NAME = "nhl-digits-csq"
PARAMS = {
    "data": {"dataset": "digits", "protocol": "digits"},
    "models": {"losses": ["csq"]},
    "registry": {"name": "nhl-{dataset}-{loss}", "variant": "nhl-full", "tolerance": 0.01},
}
SECTION = {
    "backbone": "smallcnn",
    "backbone_params": {"width": 8},
    "lengths": [8, 16],
    "epochs": 0,
    "batch_size": 50,
    "lr": 0.003,
    "seed": 0,
}
PIPELINES = Path(__file__).resolve().parents[2] / "pipelines"


def cli(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="nhl")
    sub = parser.add_subparsers(dest="command")
    promote.register(sub)
    audit.register(sub)
    args = parser.parse_args(list(argv))
    return args.func(args)


@pytest.fixture(scope="module")
def project(tmp_path_factory, digits_manifest_dir, fresh_store):
    """A project directory as after `dvc repro` of one model, as the working directory; MLflow uses
    its default store there (no MLFLOW_TRACKING_URI)."""
    from nhl.data.audit import write_report
    from nhl.data.validation import validate_manifest
    from nhl.evaluation import evaluate_file
    from nhl.experiment import build_train_config, train_from_manifest
    from nhl.tracking import ModelRun

    root = tmp_path_factory.mktemp("project")
    (root / "params.yaml").write_text(yaml.safe_dump(PARAMS))
    shutil.copytree(digits_manifest_dir, root / "data" / "splits")
    with pytest.MonkeyPatch.context() as mp:
        uri = fresh_store(root / "mlruns.db")
        for name in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "DVC_ROOT", "NHL_PIPELINE_RUN"):
            mp.delenv(name, raising=False)  # the default store: <project root>/mlruns.db, no server
        mp.chdir(root)
        write_report(validate_manifest(root / "data" / "splits"), root / "reports" / "validation")
        path = root / "models" / "csq-nhl-full.pt"
        train_from_manifest(
            build_train_config(SECTION, "csq", "nhl-full"),
            root / "data" / "splits",
            path,
            "csq-nhl-full",
            progress=False,
        )
        record, _, _ = evaluate_file(path, root / "data" / "splits", pr_lengths=())
        (root / "metrics").mkdir()
        (root / "metrics" / "csq-nhl-full.json").write_text(json.dumps(record))
        with ModelRun("csq-nhl-full", resume=record["mlflow_run_id"]) as run:
            run.log_results(record["bits"])
        yield {"root": root, "record": record, "uri": uri}


@pytest.fixture(scope="module")
def promoted(project):
    """`nhl promote` run once on the project: (exit code, stdout). As in a new process, MLflow's
    process-wide tracking URI is not the project's store (training set it; here it points elsewhere)."""
    import contextlib
    import io

    import mlflow

    mlflow.set_tracking_uri((project["root"] / "elsewhere").as_uri())
    os.environ.pop("MLFLOW_TRACKING_URI", None)  # set_tracking_uri exports it; the fixture unset it
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = cli("promote")
    return code, out.getvalue()


def mlflow_client(project):
    import mlflow

    return mlflow.MlflowClient(project["uri"])


def test_promote_registers_the_first_model_as_champion(project, promoted):
    code, out = promoted
    assert code == 0
    assert f"promote: {NAME}: version 1 (csq-nhl-full) -> champion: first version" in out
    report = (project["root"] / "reports" / "promotion.md").read_text()
    assert f"## {NAME}: version 1 is **champion**" in report
    version = mlflow_client(project).get_model_version_by_alias(NAME, "champion")
    assert version.version == 1 and version.run_id == project["record"]["mlflow_run_id"]


def test_audit_prints_the_whole_chain(project, promoted, capsys):
    root, record = project["root"], project["record"]
    run = mlflow_client(project).get_run(record["mlflow_run_id"])
    result_text = (root / "reports" / "validation" / "result.json").read_text()
    canonical = json.dumps(json.loads(result_text), sort_keys=True, separators=(",", ":"))
    meta = json.loads((root / "data" / "splits" / "manifest.json").read_text())

    assert cli("audit") == 0
    out = capsys.readouterr().out
    assert out.startswith(f"Audit trail of models:/{NAME}/1 (aliases: champion)")
    for number, link in enumerate(["data", "validation", "training run", "metrics", "promotion"], 1):
        assert re.search(rf"^{number}\. {link} +ok$", out, re.MULTILINE), link
    assert f"manifest content hash {meta['content_hash']}" in out
    assert "protocol digits" in out
    assert f"result id sha256:{hashlib.sha256(canonical.encode()).hexdigest()}" in out
    assert f"#/experiments/{run.info.experiment_id}/runs/{run.info.run_id}" in out
    for k, values in record["bits"].items():
        assert f"| {k} | {values['map']:.4f} | {values['p_at_100']:.4f} | {values['p_at_r2']:.4f} |" in out
    assert "decision champion" in out and "first version" in out
    assert out.rstrip().endswith("Chain complete: data -> validation -> training run -> metrics -> promotion.")

    assert cli("audit", "--name", NAME, "--version", "1", "--json") == 0
    trail = json.loads(capsys.readouterr().out)
    assert (
        trail["complete"]
        and trail["version"] == 1
        and [link["name"] for link in trail["links"]] == ["data", "validation", "training run", "metrics", "promotion"]
    )


def test_audit_reports_a_missing_link(project, promoted, capsys):
    client = mlflow_client(project)
    reason = client.get_model_version(NAME, "1").tags["nhl.promotion.decision"]
    client.delete_model_version_tag(NAME, "1", "nhl.promotion.decision")
    try:
        assert cli("audit") == 1
        out = capsys.readouterr().out
        assert "5. promotion    BROKEN: no promotion decision recorded" in out
        assert "Chain incomplete: promotion." in out
    finally:
        client.set_model_version_tag(NAME, "1", "nhl.promotion.decision", reason)


def test_pipeline_script_rerun_adds_no_version(project, promoted, monkeypatch, capsys):
    monkeypatch.syspath_prepend(str(PIPELINES))
    spec = importlib.util.spec_from_file_location("promote_stage", PIPELINES / "promote.py")
    stage = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(stage)
    assert stage.main(["--project", str(project["root"])]) == 0
    assert "already registered as version 1" in capsys.readouterr().out
    versions = mlflow_client(project).search_model_versions(f"name = '{NAME}'")
    assert [int(v.version) for v in versions] == [1]


def test_failed_validation_registers_nothing(project, promoted, tmp_path, capsys):
    result = json.loads((project["root"] / "reports" / "validation" / "result.json").read_text())
    bad = tmp_path / "result.json"
    bad.write_text(json.dumps({**result, "success": False, "failed": ["images exist"]}))
    report = tmp_path / "promotion.md"
    assert (
        cli(
            "promote",
            "--validation",
            str(bad),
            "--report",
            str(report),
            "--model",
            "models/csq-nhl-full.pt",
            "--name",
            "nhl-digits-other",
        )
        == 1
    )
    assert "not registered: data validation failed (images exist)" in capsys.readouterr().out
    assert "## nhl-digits-other: not registered" in report.read_text()
    names = [m.name for m in mlflow_client(project).search_registered_models()]
    assert names == [NAME]


def test_bad_arguments_are_clear_errors(project, promoted):
    with pytest.raises(ValueError, match=r"registered model 'nhl-nope' not found"):
        cli("audit", "--name", "nhl-nope")
    with pytest.raises(ValueError, match=r"has no alias 'challenger'"):
        cli("audit", "--name", NAME, "--alias", "challenger")
    with pytest.raises(ValueError, match=r"--loss: \['dpn'\] not in models.losses \['csq'\]"):
        cli("promote", "--loss", "dpn")
    with pytest.raises(ValueError, match=r"registry.tolerance: expected a number >= 0"):
        cli("promote", "--tolerance", "-1")
