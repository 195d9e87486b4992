"""bench/loss_zoo.py --compose: one table of every loss from the newest rows measured at the committed settings."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def zoo():
    sys.path.insert(0, str(ROOT / "bench"))
    spec = importlib.util.spec_from_file_location("loss_zoo", ROOT / "bench" / "loss_zoo.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


HEADERS = (
    "| loss | hyper-parameters | lr | epochs | baseline-64 | nhl-noA-noD @64 | diff | best epoch (base / nested) | ok |"
)


def table(date: str, rows: list[str]) -> str:
    body = "\n".join(rows)
    return (
        f"\n## Loss zoo on mnist5k at committed settings: baseline-64 vs nhl-noA-noD (bench/loss_zoo.py)\n\n"
        f"- date: {date}\n\n{HEADERS}\n| --- | --- | --- | --- | --- | --- | --- | --- | --- |\n{body}\n"
    )


OLD = table(
    "day 1",
    [
        "| a | m=1 | 0.001 | 6 | 0.500 | 0.400 | -0.100 | 6 / 6 | no |",
        "| b | defaults | 0.001 | 6 | 0.900 | 0.910 | +0.010 | 5 / 6 | yes |",
    ],
)
NEW = table("day 2", ["| a | m=2 | 0.001 | 8 | 0.900 | 0.920 | +0.020 | 5 / 7 | yes |"])
PARAMS = {
    "train": {"lr": 0.001, "epochs": 6, "patience": 3},
    "losses": {"a": {"m": 2, "train": {"epochs": 12}}, "b": {}},
}


def run(zoo, tmp_path, text, params=PARAMS):
    report = tmp_path / "benchmarks.md"
    report.write_text("# Benchmarks\n" + text)
    args = zoo.parse_args(["--compose", "--report", str(report)])
    return zoo.compose(args, params, ["a", "b"]), report.read_text()


def test_compose_takes_each_loss_from_its_newest_table(zoo, tmp_path):
    code, text = run(zoo, tmp_path, OLD + NEW)
    assert code == 0
    composed = text.split("(composed, 2 losses)")[1]
    # a: the day-2 row (8 epochs run = best 5 + patience 3: early stopping inside the committed 12)
    assert "| a | m=2 | 0.001 | 8 | 0.900 | 0.920 | +0.020 | 5 / 7 | yes | day 2 |" in composed
    assert "| b | defaults | 0.001 | 6 | 0.900 | 0.910 | +0.010 | 5 / 6 | yes | day 1 |" in composed
    assert "2 runs" in composed


def test_compose_refuses_a_row_not_at_the_committed_settings(zoo, tmp_path, capsys):
    code, text = run(zoo, tmp_path, OLD)  # a's newest row has m=1, committed m=2
    assert code == 2 and "composed" not in text
    err = capsys.readouterr().err
    assert "the newest a row (day 1) is not at the committed settings: hyper-parameters 'm=1'" in err
    params = {**PARAMS, "losses": {"a": {"m": 2, "train": {"epochs": 10}}, "b": {}}}
    code, _ = run(zoo, tmp_path, OLD + NEW, params)  # 8 run = best 5 + patience 3 < 10: accepted
    assert code == 0
    params = {**PARAMS, "losses": {"a": {"m": 2, "train": {"epochs": 10, "patience": 2}}, "b": {}}}
    code, _ = run(zoo, tmp_path, OLD + NEW, params)  # 8 run is neither 10 nor best 5 + patience 2
    assert code == 2
    assert "8 epochs run (best 5), committed 10 with patience 2" in capsys.readouterr().err
    code, _ = run(zoo, tmp_path, NEW)  # b measured nowhere
    assert code == 2 and "has no row for b" in capsys.readouterr().err


def test_seed_table_gives_mean_sd_and_paired_gaps_per_loss(zoo, tmp_path):
    """--seeds: per loss, the per-seed values, their mean and sample sd, and the paired nested - baseline gap."""
    report = tmp_path / "benchmarks.md"
    args = zoo.parse_args(["--seeds", "0", "1", "2", "--report", str(report)])
    base, nested = [0.90, 0.80, 0.85], [0.88, 0.81, 0.80]
    results = {}
    for seed, (b, n) in enumerate(zip(base, nested, strict=True)):
        results[("a", "baseline-64", seed)] = {"map": b, "epochs": 10 + seed}
        results[("a", "nhl-noA-noD", seed)] = {"map": n, "epochs": 12}
    section = {"backbone": "smallcnn", "backbone_params": {"width": 32}}
    assert zoo.seed_table(args, section, ["a"], {"a": {"m": 2}}, results) == 0
    row = next(line for line in report.read_text().splitlines() if line.startswith("| a |"))
    cells = [cell.strip() for cell in row.strip("|").split("|")]
    # by hand: base mean 0.85, sd 0.05; nested mean 0.83, sd sqrt(((.05)^2 + (.02)^2 + (.03)^2) / 2) = 0.0436;
    # gaps -0.02, +0.01, -0.05: mean -0.02, sd sqrt((0 + .03^2 + .03^2) / 2) = 0.03
    assert cells == [
        "a",
        "m=2",
        "0.900 / 0.800 / 0.850",
        "0.850 ± 0.050",
        "0.880 / 0.810 / 0.800",
        "0.830 ± 0.044",
        "-0.020 ± 0.030",
        "10 / 11 / 12",
    ]
    assert "seeds 0, 1, 2" in report.read_text()


def test_compose_skips_a_table_of_other_nested_lengths(zoo, tmp_path):
    """A `--lengths` table (another nested model) is newer but is not a committed-settings measurement."""
    other = NEW.replace("at committed settings", "with nested lengths [32, 64, 128]").replace("day 2", "day 3")
    other = other.replace("| a | m=2 | 0.001 | 8 | 0.900 | 0.920 |", "| a | m=2 | 0.001 | 8 | 0.900 | 0.990 |")
    code, text = run(zoo, tmp_path, OLD + NEW + other)
    assert code == 0
    composed = text.split("(composed, 2 losses)")[1]
    assert "| a | m=2 | 0.001 | 8 | 0.900 | 0.920 | +0.020 | 5 / 7 | yes | day 2 |" in composed
    assert "0.990" not in composed
