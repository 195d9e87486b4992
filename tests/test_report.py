"""The comparison report (nhl.report, `nhl report`, pipelines/report.py) on hand-built metrics files.

Two losses, three baselines and two nested variants each, one model missing (`dpn-baseline-16`)
and one nested model absent (`dpn-nhl-A`). Every number the report prints is recomputed here
from the values written into the files, with plain loops.
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import io
import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from nhl.report import build_report, write_report
from nhl.report.chooser import choose_length
from nhl.report.markdown import render

ROOT = Path(__file__).resolve().parents[1]
LOSSES = ["csq", "dpn"]
LENGTHS = [8, 16, 32]
BASELINES = [f"baseline-{k}" for k in LENGTHS]
NESTED = ["nhl-A", "nhl-full"]
VARIANTS = BASELINES + NESTED
MISSING = {"dpn-baseline-16", "dpn-nhl-A"}
METRICS = ("map", "p_at_100", "p_at_r2")
TOL = 0.01
# csq nhl-full's mAP: 16 bits is 0.5 points under the best (32) and 8 bits 6 points under, so the
# chooser must pick 16 at a 1-point tolerance (the baselines' curve is random: computed in the test).
CSQ_FULL_MAP = {8: 0.79, 16: 0.845, 32: 0.85}


def _record(loss: str, variant: str, rng: np.random.Generator) -> dict:
    lengths = [int(variant.split("-")[1])] if variant.startswith("baseline") else LENGTHS
    bits = {str(k): {m: float(rng.uniform(0.4, 0.95)) for m in METRICS} for k in lengths}
    if (loss, variant) == ("csq", "nhl-full"):
        for k, value in CSQ_FULL_MAP.items():
            bits[str(k)]["map"] = value
    seconds = float(rng.uniform(20, 60)) * (1.3 if len(lengths) > 1 else 1.0)
    return {
        "model_id": f"{loss}-{variant}",
        "loss": loss,
        "variant": variant,
        "mode": "baseline" if len(lengths) == 1 else variant,
        "lengths": lengths,
        "topk": None,
        "bits": bits,
        "train_seconds": seconds,
        "peak_memory_mb": float(rng.uniform(800, 1500)),
        "peak_memory_delta_mb": 100.0,
        "epochs": 6,
        "best_epoch": int(rng.integers(1, 7)),
        "best_val_map_mean": 0.8,
        "seconds_per_epoch": seconds / 6,
        "mlflow_run_id": f"run{rng.integers(10**9):09d}{loss}{variant}".replace("-", ""),
    }


def _pr_csv(lengths: list[int], rng: np.random.Generator) -> str:
    lines = ["bits,radius,precision,recall"]
    for k in (k for k in (16, 32) if k in lengths):
        recall = np.sort(rng.uniform(0, 1, k // 4 + 1))
        precision = np.sort(rng.uniform(0.1, 0.9, k // 4 + 1))[::-1]
        lines += [f"{k},{r},{p:.6f},{c:.6f}" for r, (p, c) in enumerate(zip(precision, recall, strict=True))]
    return "\n".join(lines) + "\n"


def _history(variant: str, rng: np.random.Generator) -> list[dict]:
    rows = []
    for epoch in range(1, 5):
        row = {"epoch": epoch, "train_loss": float(rng.uniform(0.1, 2)), "val_map_mean": 0.5}
        if variant in ("nhl-A", "nhl-full"):
            row |= {f"weight_{i}": float(w) for i, w in enumerate(rng.uniform(0.7, 1.4, len(LENGTHS)))}
            row["weights_reduced_fraction"] = 0.2
        rows.append(row)
    return rows


def _make_project(tmp_path: Path) -> dict:
    """metrics/, plots/pr, plots/history and a split manifest meta under tmp_path."""
    rng = np.random.default_rng(0)
    records = {}
    for loss in LOSSES:
        for variant in VARIANTS:
            record = _record(loss, variant, rng)
            if record["model_id"] in MISSING:
                continue
            records[record["model_id"]] = record
            for sub, name, text in (
                ("metrics", f"{record['model_id']}.json", json.dumps(record)),
                ("plots/pr", f"{record['model_id']}.csv", _pr_csv(record["lengths"], rng)),
                ("plots/history", f"{record['model_id']}.json", json.dumps(_history(variant, rng))),
            ):
                (tmp_path / sub).mkdir(parents=True, exist_ok=True)
                (tmp_path / sub / name).write_text(text)
    (tmp_path / "splits").mkdir()
    (tmp_path / "splits/manifest.json").write_text(
        json.dumps(
            {
                "dataset": "digits",
                "protocol": "digits",
                "seed": 7,
                "content_hash": "sha256:abc123",
                "protocol_spec": {"summary": "digits: 100 query"},
                "sizes": {"query": 100},
            }
        )
    )
    return {"root": tmp_path, "records": records}


@pytest.fixture
def project(tmp_path: Path) -> dict:
    """A fresh copy of the inputs, for tests that change them or write elsewhere."""
    return _make_project(tmp_path)


def _build(project: dict, **kwargs):
    root = project["root"]
    kwargs = {"losses": LOSSES, "variants": VARIANTS, "tolerance": TOL, "manifest": root / "splits"} | kwargs
    return build_report(root / "metrics", root / "plots", **kwargs)


@pytest.fixture(scope="module")
def written(tmp_path_factory) -> dict:
    """The report written once from one set of inputs; tests using it only read."""
    project = _make_project(tmp_path_factory.mktemp("report"))
    root = project["root"]
    paths = write_report(_build(project), root / "reports", map_csv=root / "plots/map_vs_bits.csv")
    return {
        **project,
        "paths": paths,
        "md": paths["markdown"].read_text(),
        "json": json.loads(paths["json"].read_text()),
    }


def _value(records: dict, model_id: str, bits: int, metric: str) -> float | None:
    record = records.get(model_id)
    return None if record is None or str(bits) not in record["bits"] else record["bits"][str(bits)][metric]


def _md_table(md: str, *markers: str) -> list[list[str]]:
    """Cells of the first table after the lines starting with each marker in turn."""
    lines = md.splitlines()
    i = 0
    for marker in markers:
        i = next(j for j in range(i, len(lines)) if lines[j].startswith(marker))
    start = next(j for j in range(i, len(lines)) if lines[j].startswith("|"))
    rows = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip("|").split("|")])
    return rows


def _points(a: float, b: float) -> float:
    return (a - b) * 100


# -- tables --------------------------------------------------------------------------------------
@pytest.mark.parametrize("metric,label", [("map", "mAP@ALL"), ("p_at_100", "P@100"), ("p_at_r2", "P@r<=2")])
def test_quality_tables_match_the_metrics_files(written, metric, label):
    records = written["records"]
    for loss in LOSSES:
        table = written["json"]["losses"][loss]["quality"][metric]
        md_rows = _md_table(written["md"], f"## {loss}", f"**{label}**")
        assert [row[0] for row in md_rows] == [str(k) for k in LENGTHS] + ["mean difference"]
        for row, md_row in zip(table["rows"], md_rows[:-1], strict=True):  # last: "mean difference"
            k = row["bits"]
            base = _value(records, f"{loss}-baseline-{k}", k, metric)
            assert row["baseline"] == base
            assert md_row[1] == ("—" if base is None else f"{base:.4f}")
            for j, variant in enumerate(NESTED):
                value = _value(records, f"{loss}-{variant}", k, metric)
                cell = row["variants"][variant]
                assert cell["value"] == value
                if value is None or base is None:
                    assert cell["diff_points"] is None
                else:
                    assert cell["diff_points"] == pytest.approx(_points(value, base))
                expected = (
                    "—" if value is None else f"{value:.4f} ({'—' if base is None else f'{_points(value, base):+.2f}'})"
                )
                assert md_row[2 + j] == expected
        for j, variant in enumerate(NESTED):
            diffs = [
                _points(
                    _value(records, f"{loss}-{variant}", k, metric), _value(records, f"{loss}-baseline-{k}", k, metric)
                )
                for k in LENGTHS
                if f"{loss}-{variant}" in records and f"{loss}-baseline-{k}" in records
            ]
            mean = sum(diffs) / len(diffs) if diffs else None
            assert table["mean_diff_points"][variant] == (pytest.approx(mean) if diffs else None)
            assert md_rows[-1][2 + j] == ("—" if mean is None else f"{mean:+.2f}")


def test_cost_table_sums_baselines_and_gives_the_speedup(written):
    records = written["records"]
    # csq: every baseline present
    csq = written["json"]["losses"]["csq"]["cost"]
    total = sum(records[f"csq-baseline-{k}"]["train_seconds"] for k in LENGTHS)
    assert csq["baseline_total"]["train_seconds_sum"] == pytest.approx(total)
    assert csq["baseline_total"]["complete"] is True
    assert csq["baseline_total"]["peak_memory_mb_max"] == max(
        records[f"csq-baseline-{k}"]["peak_memory_mb"] for k in LENGTHS
    )
    md_rows = {row[0]: row for row in _md_table(written["md"], "## csq", "### Training cost")}
    assert md_rows["**baselines, sum (3 of 3)**"][2] == f"**{total:.1f}**"
    for variant in NESTED:
        seconds = records[f"csq-{variant}"]["train_seconds"]
        assert csq["variants"][variant]["speedup"] == pytest.approx(total / seconds)
        row = md_rows[f"`csq-{variant}`"]
        assert row[2] == f"{seconds:.1f}"
        assert row[6] == f"**{total / seconds:.2f}×**"
        assert row[7] == f"`{records[f'csq-{variant}']['mlflow_run_id']}`"
    # dpn: baseline-16 missing -> partial sum shown as such, no speed-up
    dpn = written["json"]["losses"]["dpn"]["cost"]
    partial = sum(records[f"dpn-baseline-{k}"]["train_seconds"] for k in (8, 32))
    assert dpn["baseline_total"]["train_seconds_sum"] == pytest.approx(partial)
    assert dpn["baseline_total"]["complete"] is False
    assert dpn["variants"]["nhl-full"]["speedup"] is None
    assert "16" in dpn["variants"]["nhl-full"]["speedup_note"]
    md_rows = {row[0]: row for row in _md_table(written["md"], "## dpn", "### Training cost")}
    assert md_rows["**baselines, sum (2 of 3)**"][2] == f"**{partial:.1f}**"
    assert md_rows["`dpn-nhl-full`"][6].startswith("—")
    assert md_rows["`dpn-baseline-16`"][1:6] == ["—"] * 5


def test_missing_models_are_listed_and_dashed(written):
    data = written["json"]
    assert sorted(m for m, row in data["models"].items() if not row["present"]) == sorted(MISSING)
    assert data["losses"]["dpn"]["missing"] == ["dpn-baseline-16", "dpn-nhl-A"]
    assert data["losses"]["csq"]["missing"] == []
    row16 = next(r for r in data["losses"]["dpn"]["quality"]["map"]["rows"] if r["bits"] == 16)
    assert row16["baseline"] is None and row16["variants"]["nhl-A"] == {"value": None, "diff_points": None}
    assert "`dpn-nhl-A`" in written["md"]
    assert f"{len(data['models']) - 2} of {len(data['models'])} configured" in written["md"]


def test_a_loss_without_any_file_is_one_line_not_a_crash(project):
    report = _build(project, losses=["csq", "dsh"])
    assert report.data["losses"]["dsh"]["missing"] == [f"dsh-{v}" for v in VARIANTS]
    assert report.data["chooser"]["losses"]["dsh"] == {"best_variant": None, "curves": {}}
    md = render(report.data)
    assert "_No metrics files for dsh yet" in md and "figures/dsh-" not in md


def test_header_names_data_and_run_ids(written):
    md = written["md"]
    setup = {row[0]: row[1] for row in _md_table(md, "## Setup")}
    assert setup["dataset"] == "digits"
    assert setup["split seed"] == "7"
    assert setup["content hash"] == "`sha256:abc123`"
    assert "digits: 100 query" in setup["protocol"]
    for model_id, record in written["records"].items():
        assert written["json"]["models"][model_id]["mlflow_run_id"] == record["mlflow_run_id"]
        assert f"`{record['mlflow_run_id']}`" in md


# -- chooser -------------------------------------------------------------------------------------
def _reference_choice(curve: dict[int, float], tolerance: float) -> tuple[int, int]:
    best_value = max(curve.values())
    best = min(k for k, v in curve.items() if v == best_value)
    chosen = None
    for k in sorted(curve):
        if curve[best] - curve[k] <= tolerance + 1e-12:
            chosen = k
            break
    return best, chosen


def test_chooser_picks_the_shortest_length_within_tolerance(written):
    records = written["records"]
    chooser = written["json"]["chooser"]
    assert chooser["tolerance"] == TOL
    for loss in LOSSES:
        entry = chooser["losses"][loss]
        curves = {
            "baseline": {
                k: records[f"{loss}-baseline-{k}"]["bits"][str(k)]["map"]
                for k in LENGTHS
                if f"{loss}-baseline-{k}" in records
            }
        }
        for variant in NESTED:
            if f"{loss}-{variant}" in records:
                curves[variant] = {int(k): v["map"] for k, v in records[f"{loss}-{variant}"]["bits"].items()}
        assert set(entry["curves"]) == set(curves)
        means = {v: sum(curves[v].values()) / len(curves[v]) for v in NESTED if v in curves}
        assert entry["best_variant"] == max(means, key=means.get)
        for name, curve in curves.items():
            best, chosen = _reference_choice(curve, TOL)
            got = entry["curves"][name]
            assert (got["best_bits"], got["chosen_bits"]) == (best, chosen)
            assert got["storage_mb_per_million"] == chosen / 8
            assert got["search"] is None
    assert chooser["losses"]["csq"]["curves"]["nhl-full"]["chosen_bits"] == 16
    assert chooser["losses"]["dpn"]["curves"]["baseline"]["lengths_missing"] == [16]
    md_rows = {(r[0], r[1].strip("*")): r for r in _md_table(written["md"], "## Code-length chooser")}
    row = md_rows[("csq", "nhl-full")]
    assert row[2:5] == ["32 (0.8500)", "**16** (0.8450)", "2 MB"]
    assert "python bench/search.py" in written["md"]


def test_choose_length_boundaries():
    curve = {8: 0.5, 16: 0.75, 32: 1.0}  # exact binary fractions: no rounding at the edge
    assert choose_length(curve, 0.25) == (32, 16)  # exactly at the tolerance counts
    assert choose_length(curve, 0.0) == (32, 32)
    assert choose_length({8: 0.9, 16: 0.9, 32: 0.8}, 0.0) == (8, 8)  # a tie: the shortest is best
    with pytest.raises(ValueError, match="tolerance"):
        choose_length(curve, -0.1)


def test_chooser_reads_search_speed_from_the_benchmark(project):
    root = project["root"]
    bench = {
        "machine": "test box",
        "date": "2026-11-23",
        "rows": [
            {"method": "funnel-16-128", "bits": 16, "queries_per_second": 999.0, "recall_at_100": 0.9, "index_mb": 1.0},
            {"method": "flat-16", "bits": 16, "queries_per_second": 1234.5, "recall_at_100": 1.0, "index_mb": 2.0},
            {"method": "flat-32", "bits": 32, "queries_per_second": 800.0, "recall_at_100": 1.0, "index_mb": 4.0},
        ],
    }
    (root / "search.json").write_text(json.dumps(bench))
    report = _build(project, benchmark=root / "search.json")
    choice = report.data["chooser"]["losses"]["csq"]["curves"]["nhl-full"]
    assert choice["chosen_bits"] == 16
    assert choice["search"] == {
        "method": "flat-16",
        "queries_per_second": 1234.5,
        "recall_at_100": 1.0,
        "index_mb": 2.0,
    }
    assert next(r for r in choice["rows"] if r["bits"] == 8)["search"] is None
    md = render(report.data)
    assert "1,234 q/s (flat-16, recall@100 1.000)" in md and "test box" in md
    assert "python bench/search.py" not in md


# -- outputs -------------------------------------------------------------------------------------
def test_figures_are_valid_pngs_and_linked(written):
    figures = written["json"]["figures"]
    for loss in LOSSES:
        assert set(figures[loss]) == {"map_vs_bits", "train_time", "pr", "weights"}
        for rel in figures[loss].values():
            path = written["root"] / "reports" / rel
            assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
            with Image.open(path) as image:
                image.verify()
            assert f"]({rel})" in written["md"]
    assert sorted(p.name for p in (written["root"] / "reports/figures").iterdir()) == sorted(
        f"{loss}-{key}.png" for loss in LOSSES for key in ("map_vs_bits", "train_time", "pr", "weights")
    )


def test_map_vs_bits_csv_lists_every_point(written):
    rows = list(csv.DictReader(io.StringIO((written["root"] / "plots/map_vs_bits.csv").read_text())))
    expected = set()
    for record in written["records"].values():
        name = "baseline" if record["mode"] == "baseline" else record["variant"]
        expected |= {(record["loss"], name, int(k), round(v["map"], 6)) for k, v in record["bits"].items()}
    assert {(r["loss"], r["variant"], int(r["bits"]), float(r["map"])) for r in rows} == expected


def test_discovers_models_when_none_are_named(project):
    report = build_report(project["root"] / "metrics", project["root"] / "plots")
    assert list(report.data["losses"]) == LOSSES
    assert set(report.data["models"]) == {f"{loss}-{v}" for loss in LOSSES for v in VARIANTS}
    assert [m for m, row in report.data["models"].items() if not row["present"]] == ["dpn-baseline-16", "dpn-nhl-A"]


# -- errors and atomicity ------------------------------------------------------------------------
@pytest.mark.parametrize(
    "edit,message",
    [
        (lambda r: r.pop("train_seconds"), "missing key 'train_seconds'"),
        (lambda r: r.pop("bits"), "missing key 'bits'"),
        (lambda r: r["bits"]["16"].pop("p_at_r2"), "missing key 'bits.16.p_at_r2'"),
        (lambda r: r["bits"]["8"].update(map="high"), "bits.8.map: expected a finite number"),
    ],
)
def test_schema_errors_name_the_file_and_key(project, edit, message):
    path = project["root"] / "metrics/csq-nhl-full.json"
    record = json.loads(path.read_text())
    edit(record)
    path.write_text(json.dumps(record))
    with pytest.raises(ValueError) as err:
        _build(project)
    assert message in str(err.value) and "csq-nhl-full.json" in str(err.value)
    assert "\n" not in str(err.value)


def test_failures_leave_the_previous_report_untouched(project, monkeypatch):
    root = project["root"]
    write_report(_build(project, losses=["csq"]), root / "reports", map_csv=root / "plots/map_vs_bits.csv")
    outputs = [
        root / "reports/comparison.md",
        root / "reports/comparison.json",
        root / "plots/map_vs_bits.csv",
        *sorted((root / "reports/figures").iterdir()),
    ]
    before = {p: p.read_bytes() for p in outputs}
    # a bad input is found before anything is written
    (root / "metrics/csq-nhl-full.json").write_text("{not json")
    with pytest.raises(ValueError, match="csq-nhl-full.json"):
        _build(project, losses=["csq"])
    (root / "metrics/csq-nhl-full.json").write_text(json.dumps(project["records"]["csq-nhl-full"]))
    # a figure failing halfway: no output replaced, no temporary files left
    from nhl.report import plots

    def broken(*args, **kwargs):
        raise RuntimeError("drawing failed")

    monkeypatch.setitem(plots.FIGURES, "pr", broken)
    with pytest.raises(RuntimeError):
        write_report(_build(project, losses=["csq"]), root / "reports", map_csv=root / "plots/map_vs_bits.csv")
    assert {p: p.read_bytes() for p in outputs} == before
    assert sorted(p.name for p in (root / "reports").iterdir()) == ["comparison.json", "comparison.md", "figures"]


def test_bad_tolerance_is_refused(project):
    with pytest.raises(ValueError, match="tolerance"):
        _build(project, tolerance=5)


# -- entry points --------------------------------------------------------------------------------
def test_cli_command_writes_the_report(project, capsys):
    from nhl.commands import report as command

    root = project["root"]
    parser = argparse.ArgumentParser()
    command.register(parser.add_subparsers())
    args = parser.parse_args(
        [
            "report",
            "--metrics-dir",
            str(root / "metrics"),
            "--plots-dir",
            str(root / "plots"),
            "--manifest",
            str(root / "splits"),
            "--out",
            str(root / "out"),
            "--map-csv",
            str(root / "out/map.csv"),
            "--benchmark",
            str(root / "none.json"),
            "--losses",
            "csq",
            "--variants",
            *VARIANTS,
        ]
    )
    assert args.func(args) == 0
    data = json.loads((root / "out/comparison.json").read_text())
    assert list(data["losses"]) == ["csq"]
    assert "csq: nhl-full -> 16 bits" in capsys.readouterr().out


def test_stage_script_reads_params_and_writes_outputs(project, monkeypatch):
    root = project["root"]
    monkeypatch.syspath_prepend(str(ROOT / "pipelines"))
    spec = importlib.util.spec_from_file_location("nhl_stage_report", ROOT / "pipelines/report.py")
    stage = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(stage)
    params = {
        "data": {"dataset": "digits", "seed": 7},
        "train": {"epochs": 6},
        "losses": {"csq": {}},
        "evaluate": {"topk": None},
        "models": {"losses": ["dpn"], "variants": VARIANTS},
        "report": {"tolerance": 0.05},
    }
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    args = [
        "--params",
        str(root / "params.yaml"),
        "--metrics-dir",
        str(root / "metrics"),
        "--plots-dir",
        str(root / "plots"),
        "--models-dir",
        str(root / "models"),  # none here: the retrieval grids report them missing (not the cwd's models/)
        "--manifest",
        str(root / "splits"),
        "--out",
        str(root / "reports"),
        "--map-csv",
        str(root / "plots/map_vs_bits.csv"),
        "--benchmark",
        str(root / "none.json"),
        "--no-track",
    ]
    assert stage.main(args) == 0
    data = json.loads((root / "reports/comparison.json").read_text())
    assert data["chooser"]["tolerance"] == 0.05
    assert data["header"]["params"]["train"] == {"epochs": 6}
    assert "`train`: epochs=6" in (root / "reports/comparison.md").read_text()
    params["models"]["variants"] = []
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    assert stage.main(args) == 2


# -- zoo health ----------------------------------------------------------------------------------
def test_zoo_health_states_each_losses_best_baseline_and_flags_the_weak(project):
    root = project["root"]
    for bits, value in zip(LENGTHS, (0.20, 0.30, 0.25), strict=False):  # dpn's baselines far below csq's
        path = root / "metrics" / f"dpn-baseline-{bits}.json"
        if path.exists():
            record = json.loads(path.read_text())
            record["bits"][str(bits)]["map"] = value
            path.write_text(json.dumps(record))
    report = _build(project)
    csq_best = max(_value(project["records"], f"csq-baseline-{k}", k, "map") for k in LENGTHS)
    dpn_best = max(v for k, v in zip(LENGTHS, (0.20, 0.30, 0.25), strict=False) if f"dpn-baseline-{k}" not in MISSING)
    health = report.data["health"]
    assert health["best"] == pytest.approx({"csq": csq_best, "dpn": dpn_best})
    assert dpn_best < 0.5 * csq_best and list(health["losses"]) == ["dpn"] and health["best_loss"] == "csq"
    line = next(line for line in render(report.data).splitlines() if line.startswith("Zoo health"))
    assert f"csq {csq_best:.3f}" in line and f"dpn {dpn_best:.3f}" in line
    assert "Caution" in line and f"dpn ({dpn_best:.3f})" in line


def test_zoo_health_uses_the_claims_reports_rule():
    from nhl.claims.tables import weak_baselines

    quality = {
        "a": [{"variant": "baseline", "cells": {"8": {"mean": 0.9}, "16": {"mean": 0.8}}}],
        "b": [{"variant": "baseline", "cells": {"8": {"mean": 0.44}}}],
        "c": [{"variant": "baseline", "cells": {"8": {"mean": 0.46}}}],
    }
    found = weak_baselines(quality)
    assert found == {"losses": {"b": 0.44}, "best_loss": "a", "best_map": 0.9, "fraction": 0.5}  # 0.44 < 0.45 <= 0.46


def test_setup_shows_each_losses_own_training_settings(project):
    params = {
        "train": {"lr": 0.001, "epochs": 6, "patience": 3},
        "losses": {"csq": {"quant_weight": 0.0001}, "dpn": {"margin": 1.0, "train": {"lr": 0.003, "epochs": 12}}},
    }
    md = render(_build(project, params=params).data)
    rows = {row[0]: row[1:] for row in _md_table(md, "Per-loss settings")}
    assert rows["csq"] == ["quant_weight=0.0001", "0.001", "6", "3"]
    assert rows["dpn"] == ["margin=1.0", "**0.003**", "**12**", "3"]
