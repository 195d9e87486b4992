"""Training from a manifest: the model file, its metadata, the MLflow run, and config errors."""

from __future__ import annotations

import pytest
import yaml

from nhl.experiment import build_train_config, train_from_manifest
from nhl.models.hasher import load_hasher

SECTION = {
    "backbone": "smallcnn",
    "backbone_params": {"width": 8},
    "lengths": [8, 16],
    "epochs": 1,
    "batch_size": 50,
    "lr": 0.003,
    "seed": 0,
}


def test_trains_saves_and_tracks_one_model(digits_manifest_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlruns.db'}")
    monkeypatch.chdir(tmp_path)
    config = build_train_config(SECTION, "dpn", "nhl-D", {"margin": 1.0})
    assert (config.lengths, config.adaptive, config.distill, config.loss_params) == (
        (8, 16),
        False,
        True,
        {"margin": 1.0},
    )
    path = tmp_path / "models" / "dpn-nhl-D.pt"
    result = train_from_manifest(config, digits_manifest_dir, path, "dpn-nhl-D", progress=False)
    model, extra = load_hasher(path)
    assert model.lengths == [8, 16]
    assert extra["model_id"] == "dpn-nhl-D" and extra["mode"] == "nhl-D" and extra["epochs"] == 1
    assert extra["train_seconds"] == pytest.approx(result.train_seconds)
    assert not (tmp_path / "models" / "checkpoints").exists() or not any(
        (tmp_path / "models" / "checkpoints").iterdir()
    )
    assert sorted(p.name for p in path.parent.iterdir() if p.is_file()) == ["dpn-nhl-D.pt"]  # no temp files left

    import mlflow

    run = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlruns.db'}").get_run(extra["mlflow_run_id"])
    assert run.data.params["loss"] == "dpn" and run.data.params["distill"] == "True"
    assert run.data.params["data.protocol"] == "digits"
    assert run.data.metrics["train_seconds"] == pytest.approx(result.train_seconds)
    assert "val_map_16" in run.data.metrics


def test_baseline_variant_picks_one_configured_length():
    config = build_train_config(SECTION, "csq", "baseline-16")
    assert config.lengths == (16,) and config.mode == "baseline"


@pytest.mark.parametrize(
    "loss, variant, section, message",
    [
        ("nosuch", "nhl-full", SECTION, r"unknown loss 'nosuch'; known losses: .*csq"),
        ("csq", "baseline-12", SECTION, r"12 bits is not one of the configured lengths \[8, 16\]"),
        ("csq", "nhl-everything", SECTION, r"variant: unknown name 'nhl-everything'"),
        ("csq", "nhl-full", {**SECTION, "lengths": [16, 8]}, r"lengths: expected strictly increasing"),
        ("csq", "nhl-full", {**SECTION, "adaptive": True}, r"train\.adaptive: set per model"),
        ("csq", "nhl-full", {k: v for k, v in SECTION.items() if k != "lengths"}, r"train\.lengths: missing"),
        ("csq", "nhl-full", {**SECTION, "epochs": -1}, r"train\.epochs: expected an integer >= 0"),
    ],
)
def test_bad_settings_are_one_line_errors(loss, variant, section, message):
    with pytest.raises(ValueError, match=message):
        build_train_config(section, loss, variant)


def test_nhl_train_command(digits_manifest_dir, tmp_path, capsys):
    from nhl.cli import main

    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"train": SECTION, "losses": {"csq": {}}}))
    code = main(
        [
            "train",
            "--loss",
            "csq",
            "--variant",
            "baseline-8",
            "--manifest",
            str(digits_manifest_dir),
            "--params",
            str(params),
            "--out",
            str(tmp_path / "m"),
            "--no-track",
            "--epochs",
            "1",
        ]
    )
    assert code == 0 and (tmp_path / "m" / "csq" / "csq-baseline-8.pt").is_file()
    assert "csq-baseline-8: best epoch 1/1" in capsys.readouterr().out
    assert (
        main(
            [
                "train",
                "--loss",
                "csq",
                "--variant",
                "baseline-9",
                "--params",
                str(params),
                "--manifest",
                str(digits_manifest_dir),
            ]
        )
        == 2
    )
    assert "baseline-9" in capsys.readouterr().err


def test_loss_train_settings_override_the_shared_ones_for_every_model_of_that_loss():
    settings = {"margin": 2.0, "train": {"lr": 0.01, "epochs": 3}}
    for variant in ("baseline-8", "nhl-noA-noD", "nhl-full"):
        config = build_train_config(SECTION, "dpn", variant, settings)
        assert (config.lr, config.epochs, config.batch_size) == (0.01, 3, 50), variant
        assert config.loss_params == {"margin": 2.0}  # `train` is not passed to the loss
    other = build_train_config(SECTION, "csq", "baseline-8", {})
    assert (other.lr, other.epochs) == (0.003, 1)
    assert settings == {"margin": 2.0, "train": {"lr": 0.01, "epochs": 3}}  # the caller's mapping is untouched


@pytest.mark.parametrize(
    "train, message",
    [
        ({"lengths": [8]}, "losses.dpn.train.lengths: not a per-loss setting"),
        ({"seed": 1}, "losses.dpn.train.seed: not a per-loss setting"),
        ({"epochs": "6"}, "losses.dpn.train.epochs: expected int"),
        ({"lr": -1.0}, "losses.dpn.train.lr: expected a non-negative number"),
        ([1, 2], "losses.dpn.train: expected a mapping"),
    ],
)
def test_bad_loss_train_settings_name_the_key(train, message):
    with pytest.raises(ValueError, match=message.replace(".", r"\.")) as err:
        build_train_config(SECTION, "dpn", "baseline-8", {"train": train})
    assert "\n" not in str(err.value)
