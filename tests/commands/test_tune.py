"""`nhl tune`: a val-only grid whose table names the chosen point; the query split is never read."""

from __future__ import annotations

import pytest
import yaml

from nhl.cli import main
from nhl.tuning import TuneRow, best_row, grid_points, parse_grid, point_settings


def test_parse_grid_and_points():
    grid = parse_grid(["lr=0.001, 3e-3", "quant_weight=0.1,1"])
    assert grid == {"lr": [0.001, 0.003], "quant_weight": [0.1, 1]}
    assert grid_points(grid) == [
        {"lr": 0.001, "quant_weight": 0.1},
        {"lr": 0.001, "quant_weight": 1},
        {"lr": 0.003, "quant_weight": 0.1},
        {"lr": 0.003, "quant_weight": 1},
    ]
    for bad in ("lr", "lr=", "=1"):
        with pytest.raises(ValueError, match="expected KEY=V1,V2"):
            parse_grid([bad])


def test_point_settings_send_training_keys_to_the_losses_train_mapping():
    settings = {"margin": 1.0, "train": {"epochs": 12}}
    assert point_settings(settings, {"lr": 0.003, "margin": 2.0}) == {
        "margin": 2.0,
        "train": {"epochs": 12, "lr": 0.003},
    }
    assert settings == {"margin": 1.0, "train": {"epochs": 12}}


def test_best_row_prefers_the_earlier_point_on_a_tie():
    rows = [TuneRow({"lr": 1}, 0.5, 1, 1, 0.0), TuneRow({"lr": 2}, 0.7, 1, 1, 0.0), TuneRow({"lr": 3}, 0.7, 1, 1, 0.0)]
    assert best_row(rows).point == {"lr": 2}


def test_tune_command_writes_the_table_and_never_reads_the_query_split(digits_manifest_dir, tmp_path, monkeypatch):
    import nhl.data.dataset as dataset

    read = []
    original = dataset.load_split
    monkeypatch.setattr(
        dataset, "load_split", lambda manifest, split, **kw: read.append(split) or original(manifest, split, **kw)
    )
    params = tmp_path / "params.yaml"
    params.write_text(
        yaml.safe_dump(
            {
                "train": {
                    "backbone": "smallcnn",
                    "backbone_params": {"width": 8},
                    "lengths": [8, 16],
                    "epochs": 1,
                    "batch_size": 50,
                    "lr": 0.003,
                    "seed": 0,
                },
                "losses": {"dpn": {"margin": 1.0}},
            }
        )
    )
    out = tmp_path / "tuning"
    code = main(
        [
            "tune",
            "--loss",
            "dpn",
            "--bits",
            "16",
            "--grid",
            "lr=0.003,0.01",
            "--manifest",
            str(digits_manifest_dir),
            "--params",
            str(params),
            "--out",
            str(out),
        ]
    )
    assert code == 0
    assert sorted(set(read)) == ["train", "val"]
    md = (out / "dpn.md").read_text()
    rows = [line for line in md.splitlines() if line.startswith("| ") and "val mAP" not in line]
    assert len(rows) == 2 and sum(row.startswith("| **") for row in rows) == 1
    chosen = next(row for row in rows if row.startswith("| **"))
    assert chosen.split("|")[1].strip(" *") in md.split("Chosen (highest val mAP): lr=")[1].split(" ")[0]


def test_tune_command_refuses_a_bad_grid_in_one_line(digits_manifest_dir, tmp_path, capsys):
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"train": {"lengths": [16]}, "losses": {}}))
    code = main(
        [
            "tune",
            "--loss",
            "dpn",
            "--grid",
            "lr",
            "--manifest",
            str(digits_manifest_dir),
            "--params",
            str(params),
            "--out",
            str(tmp_path / "t"),
        ]
    )
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("nhl tune: error: --grid 'lr'") and "\n" not in err
    assert not (tmp_path / "t").exists()
