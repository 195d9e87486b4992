"""The claims experiment's machinery (nhl.claims, pipelines/claims.py) on hand-built results.

Statistics are checked against independent computations (scipy's binomial test, numpy); the
tables, verdicts and markdown against runs folders written here for 3 seeds, 2 losses and three
settings, with values built so that each verdict is known by construction; the collection step
against a real git repository holding a fake experiment commit. No model is trained.
"""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
from pathlib import Path

import numpy as np
import pytest
import yaml
from scipy.stats import binomtest

from nhl.claims import ClaimsReport, build_claims, write_claims
from nhl.claims.dvcexp import check_comparison, collect_cell, experiment_refs, head_commit
from nhl.claims.plan import Cell, hydra_value, merge_tier, plan_cells
from nhl.claims.runs import locked_md5, read_cell, records_from_comparison, write_cell
from nhl.claims.stats import bootstrap_mean_ci, mean_std, sign_test, summarise
from nhl.claims.tables import ClaimsSpec, weak_baselines
from nhl.claims.verdicts import DOES_NOT, HOLDS, NO_DATA, PARTLY, combine, quality_verdict, speed_verdict

ROOT = Path(__file__).resolve().parents[1]
LENGTHS = [8, 16, 32, 64, 128]
SEEDS = [0, 1, 2]
BASELINES = [f"baseline-{k}" for k in LENGTHS]
NESTED = ["nhl-noA-noD", "nhl-A", "nhl-D", "nhl-full"]
CENTRE_LOSSES = {"csq", "dpn", "orthohash", "shc", "mdsh"}
METRICS = ("map", "p_at_100", "p_at_r2")


# -- statistics -----------------------------------------------------------------------------------
@pytest.mark.parametrize("wins, losses, ties", [(9, 1, 0), (9, 1, 3), (5, 5, 0), (0, 7, 2), (120, 80, 5), (0, 0, 4)])
def test_sign_test_matches_the_binomial_sum(wins, losses, ties):
    diffs = [0.5] * wins + [-0.25] * losses + [0.0] * ties
    result = sign_test(diffs)
    assert (result.wins, result.losses, result.ties) == (wins, losses, ties)
    n, k = wins + losses, min(wins, losses)
    by_hand = min(1.0, 2 * sum(math.comb(n, i) for i in range(k + 1)) / 2**n) if n else 1.0
    assert result.p_value == pytest.approx(by_hand, rel=1e-12)
    if n:
        assert result.p_value == pytest.approx(binomtest(wins, n, 0.5).pvalue, rel=1e-9)


def test_sign_test_known_value():
    assert sign_test([1.0] * 9 + [-1.0]).p_value == pytest.approx(22 / 1024)  # 2 (C(10,0) + C(10,1)) / 2^10


def test_bootstrap_is_reproducible_and_covers_the_true_mean():
    rng = np.random.default_rng(7)
    baseline = rng.uniform(0.4, 0.8, 40)
    noise = rng.normal(0.0, 0.01, 40)
    variant = baseline + 0.02 + (noise - noise.mean())  # constructed: true mean difference 2 points
    diffs = 100 * (variant - baseline)
    first = bootstrap_mean_ci(diffs, 0.95, 4000, seed=3)
    assert first == bootstrap_mean_ci(diffs, 0.95, 4000, seed=3)
    assert first != bootstrap_mean_ci(diffs, 0.95, 4000, seed=4)
    low, high = first
    assert low < 2.0 < high and low < diffs.mean() < high
    se = diffs.std(ddof=1) / math.sqrt(diffs.size)  # the normal interval's width, as a scale check
    assert high - low == pytest.approx(2 * 1.96 * se, rel=0.2)
    assert bootstrap_mean_ci([], seed=0) == (None, None)
    assert bootstrap_mean_ci([1.5], seed=0) == (1.5, 1.5)
    with pytest.raises(ValueError, match="confidence"):
        bootstrap_mean_ci([1.0, 2.0], confidence=1.5)


def test_mean_std_and_summary():
    values = [0.71, 0.74, 0.69]
    mean, std = mean_std(values)
    assert mean == pytest.approx(np.mean(values)) and std == pytest.approx(np.std(values, ddof=1))
    assert mean_std([0.5]) == (0.5, None) and mean_std([]) == (None, None)
    s = summarise([1.0, 2.0, -1.0, 0.0], resamples=500, seed=0)
    assert (s.n, s.wins, s.losses, s.ties) == (4, 2, 1, 1) and s.mean == pytest.approx(0.5)


# -- verdicts -------------------------------------------------------------------------------------
def test_quality_verdicts_on_constructed_cases():
    win = summarise([3.0, 2.5, 4.0, 3.5, 2.0, 3.0, 4.5, 2.5, 3.0, 3.5], resamples=2000).as_dict()
    mixed = summarise([2.0, -1.5, 1.0, -0.5, 1.5, -1.0, 0.5, -0.5], resamples=2000).as_dict()
    loss = summarise([-2.0, -1.0, -3.0, 0.5, -2.5, -1.5], resamples=2000).as_dict()
    assert quality_verdict(win, 0.0) == HOLDS
    assert quality_verdict(win, 5.0) == PARTLY  # a real gain, but below the claimed size
    assert quality_verdict(mixed, 0.0) == PARTLY
    assert quality_verdict(loss, 0.0) == DOES_NOT
    assert quality_verdict(summarise([]).as_dict()) == NO_DATA
    assert speed_verdict([6.0, 5.5], 5) == HOLDS and speed_verdict([2.0, 3.0], 5) == PARTLY
    assert speed_verdict([0.9, 1.0], 5) == DOES_NOT and speed_verdict([], 5) == NO_DATA
    assert combine([HOLDS, HOLDS, NO_DATA]) == HOLDS and combine([HOLDS, DOES_NOT]) == PARTLY
    assert combine([DOES_NOT, DOES_NOT]) == DOES_NOT and combine([NO_DATA]) == NO_DATA


# -- the plan -------------------------------------------------------------------------------------
def _plan_file() -> dict:
    return yaml.safe_load((ROOT / "params" / "claims.yaml").read_text())


def test_hydra_values():
    assert hydra_value(None) == "null" and hydra_value(True) == "true" and hydra_value(0.0001) == "0.0001"
    assert hydra_value("nhl-full") == "nhl-full" and hydra_value("null") == "'null'" and hydra_value("1e5") == "'1e5'"
    assert hydra_value(["csq", "nhl-noA-noD"]) == "[csq,nhl-noA-noD]" and hydra_value({}) == "{}"
    with pytest.raises(ValueError, match="quotes"):
        hydra_value("it's")


def test_plan_of_the_claims_file():
    raw = _plan_file()
    cells = plan_cells(raw["experiment"], lambda loss: loss in CENTRE_LOSSES)
    sweeps = ["beta_0p5", "beta_2", "lambda_0p1", "lambda_0p3", "lambda_3"]  # the reference value 1 has no cell
    assert len(cells) == 2 * 2 * 3 * (2 + len(sweeps))  # datasets x regimes x seeds x settings
    per_setting = {c.setting: len(c.model_ids) for c in cells}
    assert per_setting == {"default": 14 * 9, "prefix": 5 * 4} | dict.fromkeys(sweeps, 4 * 2)
    assert sum(len(c.model_ids) for c in cells) == 2 * 2 * 3 * (126 + 20 + 5 * 8)
    names = [c.experiment_name("claims") for c in cells]
    assert len(set(names)) == len(names)
    ids = {c.cell_id for c in cells}
    assert {"mnist5k-s0-default", "digits-s2-prefix", "mnist5k-frozen-s1-default", "mnist5k-s0-beta_0p5"} <= ids
    prefix = next(c for c in cells if c.setting == "prefix")
    assert set(prefix.losses) == CENTRE_LOSSES
    assert prefix.overrides["train.centers"] == "prefix" and prefix.overrides["train.seed"] == prefix.seed
    default = cells[0]
    assert default.cell_id == "mnist5k-s0-default" and default.regime is None
    assert default.overrides["losses.dsh.train.epochs"] == 12 and default.overrides["losses.csq.quant_weight"] == 0.0001
    args = default.set_param_args()
    assert args[::2] == ["-S"] * len(default.overrides)
    assert (
        "++models.variants=[baseline-8,baseline-16,baseline-32,baseline-64,baseline-128,nhl-noA-noD,nhl-A,"
        "nhl-D,nhl-full]"
        in args
        and "++data.query=50" in args
        and "++losses.dsh.normalise=true" in args
    )
    frozen = next(c for c in cells if c.cell_id == "mnist5k-frozen-s0-default")
    frozen_args = frozen.set_param_args()
    assert "~train.backbone_params.width" in frozen_args and "++train.freeze_backbone=true" in frozen_args
    assert frozen.overrides["train.epochs"] == 20 and frozen.digest != default.digest
    beta = next(c for c in cells if c.cell_id == "mnist5k-s0-beta_0p5")
    assert beta.losses == ("csq", "dpn", "orthohash", "dch") and beta.variants == ("nhl-A", "nhl-full")
    assert beta.overrides["train.beta"] == 0.5 and beta.overrides["train.centers"] == "prefix"
    quick = plan_cells(merge_tier(raw["experiment"], raw["tiers"], "quick"), lambda loss: loss in CENTRE_LOSSES)
    assert len(quick) == 4 and sum(len(c.model_ids) for c in quick) == 2 * (27 + 8)
    assert {c.cell_id for c in quick} == {
        "mnist5k-s0-default",
        "mnist5k-s0-prefix",
        "digits-s0-default",
        "digits-s0-prefix",
    }
    assert quick[0].digest != default.digest  # another plan: another experiment name


def test_centre_losses_agree_with_the_registry():
    from nhl.losses.base import get_loss_class

    for loss in _plan_file()["experiment"]["losses"]:
        assert bool(get_loss_class(loss).uses_centers) == (loss in CENTRE_LOSSES), loss


def test_plan_errors_are_one_line():
    raw = _plan_file()["experiment"]
    with pytest.raises(ValueError, match="loss_params: no entry for dsh"):
        plan_cells({**raw, "loss_params": {"csq": {}}, "losses": ["csq", "dsh"]}, lambda loss: False)
    with pytest.raises(ValueError, match="unknown variant 'nhl-B'"):
        plan_cells({**raw, "settings": {"x": {"variants": ["nhl-B"]}}}, lambda loss: False)
    with pytest.raises(ValueError, match="set by the plan"):
        plan_cells({**raw, "common": {"models.losses": ["csq"]}}, lambda loss: False)
    with pytest.raises(ValueError, match="tier 'huge'"):
        merge_tier(raw, {"quick": {}}, "huge")


# -- hand-built runs ------------------------------------------------------------------------------
def _baseline_map(loss: str, seed: int, bits: int) -> float:
    return 0.5 + 0.05 * math.log2(bits / 8) + 0.01 * seed + (0.02 if loss == "dsh" else 0.0)


def _mixed(seed: int, i: int) -> float:
    return 0.02 if (seed * 5 + i) % 2 == 0 else -0.01  # dsh nhl-full: 8 of 15 pairs up, 7 down


# offset of each nested model from the baseline of the same loss, seed and length (mAP units)
OFFSETS = {
    ("default", "csq", "nhl-noA-noD"): lambda s, i: -0.02,
    ("default", "csq", "nhl-A"): lambda s, i: 0.01,
    ("default", "csq", "nhl-D"): lambda s, i: -0.01,
    ("default", "csq", "nhl-full"): lambda s, i: 0.05,
    ("default", "dsh", "nhl-noA-noD"): lambda s, i: 0.0,
    ("default", "dsh", "nhl-D"): lambda s, i: 0.0,
    ("default", "dsh", "nhl-full"): _mixed,
    ("prefix", "csq", "nhl-full"): lambda s, i: 0.06,  # 1 point above independent centres
    ("faithful", "csq", "nhl-full"): lambda s, i: 0.07,  # the released weighting: 2 points better
    ("faithful", "dsh", "nhl-full"): lambda s, i: _mixed(s, i) + 0.02,
}
SECONDS = {"baseline": 20.0, "nhl-noA-noD": 24.0, "nhl-A": 26.4, "nhl-D": 25.2, "nhl-full": 30.0}
MISSING = {("default", "dsh", "nhl-A", s) for s in SEEDS} | {
    ("default", "dsh", "baseline-32", 2),
    ("faithful", "dsh", "nhl-full", 1),
}
SETTINGS = {
    "default": (["csq", "dsh"], BASELINES + NESTED),
    "prefix": (["csq"], ["nhl-full"]),
    "faithful": (["csq", "dsh"], ["nhl-full"]),
}


def _map(setting: str, loss: str, variant: str, seed: int, bits: int) -> float:
    if variant.startswith("baseline"):
        return _baseline_map(loss, seed, bits)
    return _baseline_map(loss, seed, bits) + OFFSETS[(setting, loss, variant)](seed, LENGTHS.index(bits))


def _record(setting: str, loss: str, variant: str, seed: int) -> dict:
    lengths = [int(variant.split("-")[1])] if variant.startswith("baseline") else LENGTHS
    seconds = SECONDS["baseline" if variant.startswith("baseline") else variant]
    bits = {str(k): {"map": _map(setting, loss, variant, seed, k), "p_at_100": 0.5, "p_at_r2": 0.4} for k in lengths}
    return {
        "model_id": f"{loss}-{variant}",
        "loss": loss,
        "variant": variant,
        "mode": "baseline" if len(lengths) == 1 else variant,
        "lengths": lengths,
        "topk": None,
        "bits": bits,
        "train_seconds": seconds,
        "peak_memory_mb": 900.0 + len(lengths),
        "epochs": 6,
        "best_epoch": 5,
        "seconds_per_epoch": seconds / 6,
        "mlflow_run_id": f"run-{setting}-{seed}-{loss}-{variant}",
        "source": {"model_md5": f"md5-{loss}-{variant}"},
    }


def _write_runs(runs: Path, digests: dict[str, str] | None = None) -> list[str]:
    ids = []
    for setting, (losses, variants) in SETTINGS.items():
        for seed in SEEDS:
            records = [
                _record(setting, loss, v, seed)
                for loss in losses
                for v in variants
                if (setting, loss, v, seed) not in MISSING
            ]
            meta = {
                "cell_id": f"toy-s{seed}-{setting}",
                "dataset": "toy",
                "seed": seed,
                "setting": setting,
                "experiment": f"claims-toy-s{seed}-{setting}-abcd0123",
                "rev": f"{seed}{setting}".ljust(40, "0"),
                "baseline_rev": "f" * 40,
                "digest": (digests or {}).get(f"toy-s{seed}-{setting}", "abcd0123"),
                "models_expected": len(losses) * len(variants),
                "machine": "2 CPU cores (Toy CPU), no CUDA GPU" if seed < 2 else None,
            }
            write_cell(runs, meta, records, {"dvc.lock": "schema: '2.0'\n"})
            ids.append(meta["cell_id"])
    return ids


def _spec(**extra) -> ClaimsSpec:
    models = {s: {"losses": tuple(losses), "variants": tuple(v)} for s, (losses, v) in SETTINGS.items()}
    return ClaimsSpec(
        datasets=("toy",), seeds=tuple(SEEDS), lengths=tuple(LENGTHS), models=models, resamples=2000, **extra
    )


@pytest.fixture()
def report(tmp_path):
    ids = _write_runs(tmp_path / "runs")
    return build_claims(tmp_path / "runs", _spec(), ids, header={"command": "test"}).data


def _pairs(a, b, losses, lengths=LENGTHS):
    """(a, b) mAP pairs by plain loops over the construction (independent of nhl.claims);
    a and b are (setting, variant), variant "base" meaning the baseline of each length."""
    out = []
    for loss in losses:
        for seed in SEEDS:
            for k in lengths:
                keys = [(s, loss, f"baseline-{k}" if v == "base" else v, seed) for s, v in (a, b)]
                if any(key in MISSING or loss not in SETTINGS[key[0]][0] for key in keys):
                    continue
                out.append(tuple(_map(s, loss, v, seed, k) for s, _, v, _ in keys))
    return out


def test_quality_tables_match_the_construction(report):
    section = report["datasets"]["toy"]
    rows = {(r["setting"], r["variant"]): r for r in section["losses"]["csq"]["rows"]}
    assert list(rows)[0] == ("default", "baseline")
    cell = rows[("default", "nhl-full")]["cells"]["16"]
    values = [_map("default", "csq", "nhl-full", s, 16) for s in SEEDS]
    assert cell["mean"] == pytest.approx(np.mean(values)) and cell["std"] == pytest.approx(np.std(values, ddof=1))
    assert cell["diff"]["mean"] == pytest.approx(5.0)
    dsh = {(r["setting"], r["variant"]): r for r in section["losses"]["dsh"]["rows"]}
    assert dsh[("default", "baseline")]["cells"]["32"]["n"] == 2  # one baseline missing
    assert all(c["mean"] is None for c in dsh[("default", "nhl-A")]["cells"].values())
    # pooled nhl-full vs baselines, points and relative %, against plain loops
    pooled = next(r for r in section["pooled"] if (r["setting"], r["variant"]) == ("default", "nhl-full"))
    pairs = _pairs(("default", "nhl-full"), ("default", "base"), ["csq", "dsh"])
    assert pooled["points"]["n"] == len(pairs) == 29
    assert pooled["points"]["mean"] == pytest.approx(np.mean([100 * (a - b) for a, b in pairs]))
    assert pooled["percent"]["mean"] == pytest.approx(np.mean([100 * (a - b) / b for a, b in pairs]))
    wins = sum(a > b for a, b in pairs)
    assert (pooled["points"]["wins"], pooled["points"]["losses"]) == (wins, len(pairs) - wins)
    assert pooled["points"]["p_value"] == pytest.approx(binomtest(wins, len(pairs)).pvalue)


def test_comparisons_cost_and_verdicts(report):
    section = report["datasets"]["toy"]
    comps = {c["key"]: c for c in section["comparisons"]}
    assert comps["A"]["per_loss"]["dsh"]["n"] == 0 and comps["A"]["pooled"]["mean"] == pytest.approx(3.0)
    assert comps["D"]["pooled"]["ties"] == 15 and comps["D"]["pooled"]["wins"] == 15
    centres, faithful = comps["centres:nhl-full"], comps["faithful:nhl-full"]
    assert centres["losses"] == ["csq"] and centres["pooled"]["mean"] == pytest.approx(1.0)
    assert faithful["pooled"]["n"] == 15 + 10 and faithful["pooled"]["mean"] == pytest.approx(-2.0)
    cost = section["losses"]["csq"]["cost"]
    assert cost["baselines"]["seconds"]["mean"] == pytest.approx(5 * 20.0)
    assert cost["variants"]["nhl-full"]["speedup"]["mean"] == pytest.approx(100 / 30)
    assert cost["variants"]["nhl-A"]["epoch_overhead_percent"]["mean"] == pytest.approx(10.0)
    assert section["losses"]["dsh"]["cost"]["baselines"]["seeds_complete"] == [0, 1]
    verdicts = {c["id"]: c["verdict"] for c in section["claims"]}
    assert verdicts == {
        "time": PARTLY,
        "gain": HOLDS,
        "gain:prefix": HOLDS,
        "losses": PARTLY,
        "lengths": PARTLY,
        "A": HOLDS,
        "D": HOLDS,
        "centres:nhl-full": HOLDS,
        "faithful:nhl-full": DOES_NOT,
    }
    prefix_gain = next(c for c in section["claims"] if c["id"] == "gain:prefix")["numbers"]["points"]
    pairs = _pairs(("prefix", "nhl-full"), ("default", "base"), ["csq"])
    assert prefix_gain["n"] == len(pairs) == 15
    assert prefix_gain["mean"] == pytest.approx(np.mean([100 * (a - b) for a, b in pairs])) == pytest.approx(6.0)
    per_loss = next(c for c in section["claims"] if c["id"] == "losses")["numbers"]["per_loss"]
    assert per_loss == {"csq": HOLDS, "dsh": PARTLY}
    assert report["models"]["expected"] == 3 * (2 * 9 + 1 + 2) and report["models"]["found"] == 3 * 21 - len(MISSING)


def test_markdown_shows_missing_cells_and_provenance(report, tmp_path):
    paths = write_claims(ClaimsReport(report), tmp_path / "reports" / "claims.md", tmp_path / "reports" / "claims")
    text = paths["markdown"].read_text()
    dsh = text[text.index("#### dsh") : text.index("#### All losses")]
    row = next(line for line in dsh.splitlines() if line.startswith("| nhl-A |"))
    assert row.count("—") >= len(LENGTHS)
    assert "| **partly** |" in text and "| **does not** |" in text
    assert "`run-default-0-csq-nhl-full`" in text and "`md5-csq-nhl-full`" in text
    assert "![toy: map](claims/figures/toy-map.png)" in text
    assert sorted(p.name for p in paths["figures"].iterdir()) == ["toy-delta.png", "toy-map.png", "toy-time.png"]
    saved = json.loads(paths["json"].read_text())
    assert saved["verdicts"] == report["verdicts"]


def test_weak_baselines_are_flagged_in_the_report(report):
    from nhl.claims.markdown import render

    def rows(*means):  # fewer means than LENGTHS (strict=False): the later lengths get no cell
        base = {"variant": "baseline", "cells": {str(k): {"mean": m} for k, m in zip(LENGTHS, means, strict=False)}}
        nested = {"variant": "nhl-full", "cells": {str(k): {"mean": 0.99} for k in LENGTHS}}  # not a baseline
        return [base, nested]

    quality = {
        "csq": rows(0.80, 0.90, 0.92, None, 0.91),
        "dsh": rows(0.30, 0.33, 0.36, 0.35, 0.34),
        "dpn": rows(0.50, 0.47, None, None, None),
        "new": [rows(None)[0]],
    }
    weak = weak_baselines(quality)
    assert weak == {"losses": {"dsh": 0.36}, "best_loss": "csq", "best_map": 0.92, "fraction": 0.5}  # 0.50 >= 0.46
    assert weak_baselines({})["losses"] == {}
    assert report["datasets"]["toy"]["weak_baselines"]["losses"] == {}  # toy losses are close
    assert "Caution:" not in render(report)
    flagged = json.loads(json.dumps(report))
    flagged["datasets"]["toy"]["weak_baselines"] = weak
    assert (
        "Caution: the separately trained models of dsh (0.360) reach less than 50% of the best loss's mAP (csq: 0.920)"
    ) in render(flagged)


def test_markdown_names_the_machine_and_the_paper_protocol(report, tmp_path):
    from nhl.claims.markdown import PAPER_COMMANDS, render

    text = render(report)
    assert "| machine | 2 CPU cores (Toy CPU), no CUDA GPU |" in text  # seed-2 cells: none recorded
    paper = text[text.index("## The paper's protocol") : text.index("## Provenance")]
    assert "Not run for this report" in paper and "had no GPU" in paper
    assert all(command in paper for command in PAPER_COMMANDS) and "Its last report" not in paper
    gpu = json.loads(json.dumps(report))
    for cell in gpu["cells"]:
        cell["machine"] = "16 CPU cores, GPU NVIDIA H100; torch 2.14.1"
    gpu["header"]["paper_report"] = "claims-paper.md"
    paper = render(gpu)[render(gpu).index("## The paper's protocol") :]
    assert "not part of this plan" in paper and "[claims-paper.md](claims-paper.md)" in paper
    gpu["spec"]["datasets"] = ["cifar10"]
    assert "The cifar10 section above is the paper's protocol" in render(gpu)


def test_report_warns_when_one_dataset_ran_on_several_kinds_of_machine(report):
    from nhl.claims.markdown import render

    # the construction records a machine for seeds 0 and 1 only: two kinds for the one dataset
    (warning,) = report["warnings"]
    assert warning.startswith("toy: its cells ran on 2 kinds of machine")
    assert "2 CPU cores (Toy CPU), no CUDA GPU (toy-s0-" in warning and "not recorded (toy-s2-" in warning
    assert f"- **warning**: {warning}" in render(report)
    same = json.loads(json.dumps(report))
    same["warnings"] = []
    assert "**warning**" not in render(same)


def test_write_is_atomic(report, tmp_path, monkeypatch):
    out = tmp_path / "reports"
    paths = write_claims(ClaimsReport(report), out / "claims.md", out / "claims")
    before = {p: p.read_bytes() for p in (paths["markdown"], paths["json"])}
    figures = sorted(p.name for p in paths["figures"].iterdir())

    def broken(_data):
        raise RuntimeError("render failed")

    monkeypatch.setattr("nhl.claims.markdown.render", broken)
    with pytest.raises(RuntimeError, match="render failed"):
        write_claims(ClaimsReport(report), out / "claims.md", out / "claims")
    assert {p: p.read_bytes() for p in before} == before
    assert sorted(p.name for p in paths["figures"].iterdir()) == figures
    leftovers = [p for p in out.rglob(".*") if p.name.endswith((".tmp", ".old"))]
    assert leftovers == []


def test_stale_cells_are_left_out(tmp_path):
    ids = _write_runs(tmp_path / "runs")
    digests = dict.fromkeys(ids, "abcd0123") | {"toy-s1-prefix": "99999999"}
    data = build_claims(tmp_path / "runs", _spec(), ids + ["toy-s9-default"], digests).data
    assert any("toy-s1-prefix" in note and "left out" in note for note in data["notes"])
    assert any(note == "toy-s9-default: not collected" for note in data["notes"])
    assert len(data["cells"]) == len(ids) - 1


# -- collection from a DVC experiment commit ------------------------------------------------------
def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout.strip()


def test_records_round_trip_through_comparison_json(tmp_path):
    from nhl.report import build_report

    metrics = tmp_path / "metrics"
    metrics.mkdir()
    originals = [
        _record("default", loss, v, 0)
        for loss in ("csq", "dsh")
        for v in BASELINES + NESTED
        if ("default", loss, v, 0) not in MISSING
    ]
    for record in originals:
        (metrics / f"{record['model_id']}.json").write_text(
            json.dumps({k: v for k, v in record.items() if k != "source"})
        )
    data = build_report(metrics, tmp_path / "plots", losses=["csq", "dsh"], variants=BASELINES + NESTED).data
    rebuilt = {r["model_id"]: r for r in records_from_comparison(data)}
    assert set(rebuilt) == {r["model_id"] for r in originals}
    for record in originals:
        got = rebuilt[record["model_id"]]
        assert got["bits"] == record["bits"] and got["mode"] == record["mode"]
        for key in ("train_seconds", "peak_memory_mb", "epochs", "seconds_per_epoch", "mlflow_run_id", "lengths"):
            assert got[key] == record[key], key


def test_collect_cell_from_an_experiment_commit(tmp_path):
    from nhl.report import build_report

    cell = plan_cells(
        {
            "datasets": {"toy": {"data.dataset": "toy"}},
            "seeds": [1],
            "losses": ["csq"],
            "loss_params": {"csq": {}},
            "common": {"train.epochs": 2},
            "settings": {"default": {"variants": ["baseline-16", "nhl-full"]}},
        },
        lambda loss: True,
    )[0]
    repo = tmp_path / "repo"
    (repo / "metrics").mkdir(parents=True)
    for v in cell.variants:
        record = _record("default", "csq", v, 1)
        record.pop("source")
        (repo / "metrics" / f"csq-{v}.json").write_text(json.dumps(record))
    quoted = {"data": {"dataset": "toy"}, "train": {"epochs": 2, "seed": 1}, "losses": {"csq": {}}}
    data = build_report(
        repo / "metrics", repo / "plots", losses=["csq"], variants=list(cell.variants), params=quoted
    ).data
    (repo / "reports").mkdir()
    (repo / "reports" / "comparison.json").write_text(json.dumps(data))
    lock = {
        "schema": "2.0",
        "stages": {
            f"train@csq-{v}": {"outs": [{"path": f"models/csq-{v}.pt", "md5": f"m{i}"}]}
            for i, v in enumerate(cell.variants)
        },
    }
    lock["stages"]["evaluate@csq-nhl-full"] = {"outs": [{"path": "metrics/csq-nhl-full.json", "md5": "e1"}]}
    (repo / "dvc.lock").write_text(yaml.safe_dump(lock))
    (repo / "params.yaml").write_text("train: {seed: 1}\n")
    (repo / ".gitignore").write_text("/metrics/\n")  # as in this project: not in the commit
    _git(tmp_path, "init", "-q", str(repo))
    _git(repo, "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-q", "--allow-empty", "-m", "baseline")
    baseline = _git(repo, "rev-parse", "HEAD")
    _git(repo, "add", "-A")
    _git(repo, "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-q", "-m", "experiment")
    rev = _git(repo, "rev-parse", "HEAD")
    name = cell.experiment_name("claims")
    _git(repo, "update-ref", f"refs/exps/{baseline[:2]}/{baseline[2:]}/{name}", rev)
    assert experiment_refs(repo, baseline) == {name: rev}
    assert head_commit(repo) == rev and head_commit(repo, baseline[:8]) == baseline  # --rev resolves the same
    with pytest.raises(ValueError, match="git rev-parse --verify"):
        head_commit(repo, "no-such-commit")
    assert locked_md5((repo / "dvc.lock").read_text())["models/csq-nhl-full.pt"] == "m1"

    folder = collect_cell(repo, cell, name, rev, baseline, tmp_path / "runs", machine="2 CPU cores, no CUDA GPU")
    collected = read_cell(folder)
    assert collected.meta["experiment"] == name and collected.meta["models_found"] == 2
    assert collected.meta["machine"] == "2 CPU cores, no CUDA GPU"
    full = collected.results["csq-nhl-full"]
    assert full.bits[32]["map"] == pytest.approx(_map("default", "csq", "nhl-full", 1, 32))
    assert full.mlflow_run_id == "run-default-1-csq-nhl-full"
    assert collected.sources["csq-nhl-full"] == {
        "experiment": name,
        "rev": rev,
        "from": "reports/comparison.json",
        "model_md5": "m1",
        "metrics_md5": "e1",
    }
    assert (folder / "dvc.lock").read_text() == (repo / "dvc.lock").read_text()

    stale = Cell(cell.dataset, 2, cell.setting, cell.losses, cell.variants, {**cell.overrides, "train.seed": 2})
    with pytest.raises(ValueError, match="train.seed=1.*did not run"):
        check_comparison(data, stale, name)


# -- the driver -----------------------------------------------------------------------------------
def _driver():
    spec = importlib.util.spec_from_file_location("claims_driver", ROOT / "pipelines" / "claims.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_driver_dry_run_prints_plan_and_cost(capsys):
    driver = _driver()
    assert driver.main(["--params", str(ROOT / "params" / "claims.yaml"), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "claims: 84 cells, 2232 models" in out
    assert "dvc exp run --temp --keep-going -n claims-mnist5k-s0-default-" in out
    assert "-n claims-digits-frozen-s2-lambda_3-" in out
    assert driver.main(["--params", str(ROOT / "params" / "claims.yaml"), "--quick", "--dry-run"]) == 0
    assert "claims: 4 cells, 70 models" in capsys.readouterr().out
    assert driver.main(["--params", str(ROOT / "params" / "claims.yaml"), "--tier", "three-hours", "--dry-run"]) == 0
    out = capsys.readouterr().out  # every loss, both regimes and the sweeps on mnist5k, one seed
    assert "claims: 14 cells, 372 models" in out and "claims:   mnist5k-frozen: 7 cells, 186 models" in out


def test_driver_report_only(tmp_path, capsys):
    plan = {
        "experiment": {
            "prefix": "claims",
            "datasets": {"toy": {}},
            "seeds": SEEDS,
            "losses": ["csq", "dsh"],
            "loss_params": {"csq": {}, "dsh": {}},
            "common": {"train.lengths": LENGTHS},
            "settings": {
                s: {"variants": v, **({"centre_losses_only": True} if s == "prefix" else {})}
                for s, (_, v) in SETTINGS.items()
            },
        },
        "report": {"resamples": 500},
    }
    (tmp_path / "plan.yaml").write_text(yaml.safe_dump(plan))
    driver = _driver()
    _, cells, _, _ = driver.load_plan(tmp_path / "plan.yaml", None)
    assert {(c.setting, c.losses) for c in cells} == {(s, tuple(losses)) for s, (losses, _) in SETTINGS.items()}
    runs = tmp_path / "runs"
    _write_runs(runs, {c.cell_id: c.digest for c in cells})
    args = [
        "--params",
        str(tmp_path / "plan.yaml"),
        "--report-only",
        "--runs-dir",
        str(runs),
        "--out",
        str(tmp_path / "out" / "claims.md"),
        "--out-dir",
        str(tmp_path / "out" / "claims"),
    ]
    assert driver.main(args) == 0
    out = capsys.readouterr().out
    assert "toy: does not: The corrected weighting" in out and f"{3 * 21 - len(MISSING)} of 63 models" in out
    text = (tmp_path / "out" / "claims.md").read_text()
    assert "`" + "f" * 40 + "`" in text and "note:" not in text  # baseline commit from the cells; none left out


def test_driver_paths_per_tier_and_rev_rule(tmp_path, capsys):
    driver = _driver()
    full, quick = driver.parse_args([]), driver.parse_args(["--quick"])
    assert (full.out, full.out_dir, full.runs_dir) == (
        Path("reports/claims.md"),
        Path("reports/claims"),
        Path("reports/claims/runs"),
    )
    assert (quick.out, quick.out_dir, quick.runs_dir) == (
        Path("reports/claims-quick.md"),
        Path("reports/claims-quick"),
        Path("reports/claims-quick/runs"),
    )
    mine = driver.parse_args(["--tier", "paper", "--out-dir", str(tmp_path / "x")])
    assert mine.out == Path("reports/claims-paper.md") and mine.runs_dir == tmp_path / "x" / "runs"
    assert driver.main(["--params", str(ROOT / "params" / "claims.yaml"), "--rev", "HEAD~1"]) == 2
    assert (
        capsys.readouterr().err.strip() == "claims: error: --rev: only with --no-run (new experiments always "
        "branch from HEAD)"
    )
