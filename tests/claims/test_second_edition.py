"""The claims report's second edition on hand-made results: regimes, sweeps, recommendations.

A toy plan (2 losses, 3 seeds, two regimes, a sweep of beta) is parsed by the real plan code, its
cells are written as collected runs with mAP values built so that each verdict, disagreement and
recommendation is known by construction, and the report is checked against plain loops over
that construction (scipy's binomial test for p-values, Holm by hand). No model is trained.
"""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest
import yaml
from scipy.stats import binomtest

from nhl.claims import build_claims
from nhl.claims.markdown import render
from nhl.claims.plan import REMOVE, parse_plan, plan_cells
from nhl.claims.runs import write_cell
from nhl.claims.stats import holm
from nhl.claims.verdicts import DOES_NOT, HOLDS, PARTLY

ROOT = Path(__file__).resolve().parents[2]
LENGTHS = [8, 16, 32, 64, 128]
SEEDS = [0, 1, 2]
LOSSES = ["csq", "dch"]  # csq has hash centres, dch has not
BASE = {8: 0.60, 16: 0.70, 32: 0.795, 64: 0.80, 128: 0.80}  # saturates: the chooser has a choice


def _driver():
    spec = importlib.util.spec_from_file_location("claims_driver_2", ROOT / "pipelines" / "claims.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


PLAN = {
    "prefix": "claims",
    "datasets": {"toy": {"data.dataset": "digits"}},
    "seeds": SEEDS,
    "losses": LOSSES,
    "loss_params": {"csq": {}, "dch": {}},
    "common": {"train.lengths": LENGTHS},
    "regimes": {
        "scratch": {},
        "frozen": {"remove": ["train.backbone_params.width"], "overrides": {"train.freeze_backbone": True}},
    },
    "settings": {
        "default": {
            "overrides": {"train.centers": "independent"},
            "variants": [f"baseline-{k}" for k in LENGTHS] + ["nhl-noA-noD", "nhl-A", "nhl-full"],
        },
        "prefix": {
            "overrides": {"train.centers": "prefix"},
            "variants": ["nhl-noA-noD", "nhl-A", "nhl-full"],
            "centre_losses_only": True,
        },
    },
    "sweeps": {
        "beta": {
            "key": "train.beta",
            "values": [0.5, 1.0, 2.0],
            "reference": 1.0,
            "losses": LOSSES,
            "variants": ["nhl-A"],
            "compare": ["nhl-A", "nhl-noA-noD"],
            "overrides": {"train.centers": "prefix"},
            "reference_settings": ["prefix", "default"],
        }
    },
}


def _centres(loss: str) -> bool:
    return loss == "csq"


def _j(loss: str, seed: int, bits: int) -> int:
    """The pair's index 0..29 over losses x seeds x lengths."""
    return (LOSSES.index(loss) * len(SEEDS) + seed) * len(LENGTHS) + LENGTHS.index(bits)


# offsets from the baseline of the same loss, seed and length (mAP); sweep settings from the plain model
NESTED = {
    ("scratch", "default", "csq"): {"nhl-noA-noD": -0.01, "nhl-A": 0.02, "nhl-full": 0.03},
    ("scratch", "default", "dch"): {"nhl-noA-noD": -0.01, "nhl-A": 0.02, "nhl-full": 0.03},
    ("scratch", "prefix", "csq"): {"nhl-noA-noD": 0.0, "nhl-A": 0.03, "nhl-full": 0.04},
    ("frozen", "default", "csq"): {"nhl-noA-noD": 0.0, "nhl-A": -0.02, "nhl-full": 0.01},
    ("frozen", "default", "dch"): {"nhl-noA-noD": -0.01, "nhl-A": -0.03, "nhl-full": -0.005},
    ("frozen", "prefix", "csq"): {"nhl-noA-noD": 0.0, "nhl-A": -0.02, "nhl-full": 0.02},
}
SWEEP = {  # nhl-A at a swept beta, minus the reference setting's nhl-noA-noD, by pair index
    ("scratch", "beta_0p5"): lambda j: 0.01,  # A helps at beta 0.5: holds
    ("scratch", "beta_2"): lambda j: -0.01,  # and hurts at 2: does not
    ("frozen", "beta_0p5"): lambda j: 0.02 if j % 10 < 7 else -0.01,  # 21 of 30 up: p 0.043, Holm > 0.05
    ("frozen", "beta_2"): lambda j: 0.01 if j % 2 else -0.02,
}


def _reference(loss: str) -> str:
    return "prefix" if _centres(loss) else "default"


def _map(regime: str, setting: str, loss: str, variant: str, seed: int, bits: int) -> float:
    base = BASE[bits] + 0.01 * seed
    if variant.startswith("baseline"):
        return base
    if setting.startswith("beta_"):
        plain = NESTED[(regime, _reference(loss), loss)]["nhl-noA-noD"]
        return base + plain + SWEEP[(regime, setting)](_j(loss, seed, bits))
    return base + NESTED[(regime, setting, loss)][variant]


def _write(runs: Path, cells) -> None:
    for cell in cells:
        regime = cell.regime or "scratch"
        records = []
        for loss in cell.losses:
            for variant in cell.variants:
                lengths = [int(variant.split("-")[1])] if variant.startswith("baseline") else LENGTHS
                bits = {
                    str(k): {
                        "map": _map(regime, cell.setting, loss, variant, cell.seed, k),
                        "p_at_100": 0.5,
                        "p_at_r2": 0.4,
                    }
                    for k in lengths
                }
                records.append(
                    {
                        "model_id": f"{loss}-{variant}",
                        "loss": loss,
                        "variant": variant,
                        "mode": "baseline" if variant.startswith("baseline") else variant,
                        "lengths": lengths,
                        "topk": None,
                        "bits": bits,
                        "train_seconds": 10.0,
                        "peak_memory_mb": 500.0,
                        "epochs": 6,
                        "best_epoch": 6,
                        "seconds_per_epoch": 10 / 6,
                        "mlflow_run_id": None,
                    }
                )
        meta = {
            "cell_id": cell.cell_id,
            "dataset": cell.dataset,
            "seed": cell.seed,
            "setting": cell.setting,
            "experiment": cell.experiment_name(),
            "rev": "a" * 40,
            "digest": cell.digest,
            "models_expected": len(cell.model_ids),
        }
        write_cell(runs, meta, records, {})


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    runs = tmp_path_factory.mktemp("second") / "runs"
    driver = _driver()
    cells = plan_cells(PLAN, _centres)
    _write(runs, cells)
    spec = driver.claims_spec(PLAN, cells, {"resamples": 1000}, tuple(LENGTHS))
    data = build_claims(runs, spec, [c.cell_id for c in cells], {c.cell_id: c.digest for c in cells}).data
    return cells, spec, data


# -- the plan -------------------------------------------------------------------------------------
def test_regimes_keep_the_reference_ids_and_name_the_others():
    plan = parse_plan(PLAN, _centres)
    ids = [c.cell_id for c in plan.cells]
    assert ids[:4] == ["toy-s0-default", "toy-s0-prefix", "toy-s0-beta_0p5", "toy-s0-beta_2"]
    assert "toy-frozen-s2-beta_2" in ids and len(ids) == 2 * 3 * 4
    assert plan.sections() == {
        "toy": {"dataset": "toy", "regime": "scratch", "overrides": {}},
        "toy-frozen": {
            "dataset": "toy",
            "regime": "frozen",
            "overrides": {"train.backbone_params.width": REMOVE, "train.freeze_backbone": True},
        },
    }
    frozen = next(c for c in plan.cells if c.cell_id == "toy-frozen-s0-default")
    assert frozen.overrides["train.backbone_params.width"] == REMOVE
    assert "~train.backbone_params.width" in frozen.set_param_args()
    # a plan without regimes: the first edition's ids, unchanged digests
    flat = {k: v for k, v in PLAN.items() if k not in ("regimes", "sweeps")}
    assert [c.cell_id for c in plan_cells(flat, _centres)] == [
        f"toy-s{s}-{name}" for s in SEEDS for name in ("default", "prefix")
    ]
    assert plan_cells(flat, _centres)[0].digest == plan.cells[0].digest


def test_sweeps_add_one_setting_per_non_reference_value():
    plan = parse_plan(PLAN, _centres)
    (sweep,) = plan.sweeps
    assert sweep.settings() == {0.5: "beta_0p5", 1.0: None, 2.0: "beta_2"}
    cell = next(c for c in plan.cells if c.cell_id == "toy-s1-beta_2")
    assert cell.losses == ("csq", "dch") and cell.variants == ("nhl-A",)
    assert cell.overrides["train.beta"] == 2.0 and cell.overrides["train.centers"] == "prefix"
    assert plan.settings["beta_0p5"] == {"train.centers": "prefix", "train.beta": 0.5}
    fewer = parse_plan({**PLAN, "losses": ["csq"], "loss_params": {"csq": {}}}, _centres)
    assert fewer.sweeps[0].losses == ("csq",)  # a tier with fewer losses keeps the sweep's that it has


def _sweep(**change):
    return {**PLAN, "sweeps": {"beta": {**PLAN["sweeps"]["beta"], **change}}}


@pytest.mark.parametrize(
    "plan, message",
    [
        ({**PLAN, "regimes": {}}, "experiment.regimes: expected at least one regime"),
        ({**PLAN, "regimes": {"frozen": {"datasets": ["cifar"]}}}, "experiment.regimes.frozen.datasets: cifar not in"),
        (
            {**PLAN, "regimes": {"frozen": {"backbone": "x"}}},
            r"experiment.regimes.frozen: unknown key\(s\) \['backbone'\]",
        ),
        (
            {**PLAN, "regimes": {"frozen": {"remove": ["models.losses"]}}},
            "experiment.regimes.frozen.remove: 'models.losses'",
        ),
        (_sweep(key="models.losses"), "experiment.sweeps.beta.key: expected a dotted params.yaml key"),
        (_sweep(values=[0.5, True]), "experiment.sweeps.beta.values: expected a finite number, got True"),
        (_sweep(reference=3.0), r"experiment.sweeps.beta.reference: 3.0 is not one of values \[0.5, 1.0, 2.0\]"),
        (_sweep(variants=["baseline-8"]), "experiment.sweeps.beta.variants: 'baseline-8' is not a nested variant"),
        (_sweep(compare=["nhl-D", "nhl-noA-noD"]), "experiment.sweeps.beta.compare: expected"),
        (_sweep(reference_settings=["faithful"]), "experiment.sweeps.beta.reference_settings: faithful not in"),
        (_sweep(grid=[1]), r"experiment.sweeps.beta: unknown key\(s\) \['grid'\]"),
        ({**_sweep(), "settings": {**PLAN["settings"], "beta_2": {"variants": ["nhl-A"]}}}, "its setting beta_2"),
    ],
)
def test_plan_errors_name_the_field(plan, message):
    with pytest.raises(ValueError, match=message) as err:
        parse_plan(plan, _centres)
    assert "\n" not in str(err.value)


def test_loss_params_are_the_committed_settings():
    """params/claims.yaml copies params.yaml's `losses:` for every registered loss."""
    import nhl.losses  # noqa: F401  (registers every loss)
    from nhl.losses.base import LOSSES as REGISTRY

    committed = yaml.safe_load((ROOT / "params.yaml").read_text())["losses"]
    plan = yaml.safe_load((ROOT / "params" / "claims.yaml").read_text())["experiment"]
    assert sorted(plan["losses"]) == sorted(REGISTRY) == sorted(committed)
    assert plan["loss_params"] == committed


# -- regimes and sweeps in the report -------------------------------------------------------------
def test_each_regime_has_its_own_verdicts_and_disagreements_are_listed(toy):
    _, _, data = toy
    verdicts = {(v["dataset"], v["id"]): v["verdict"] for v in data["verdicts"]}
    assert verdicts[("toy", "A")] == HOLDS and verdicts[("toy-frozen", "A")] == DOES_NOT
    differ = {cid for (section, cid), v in verdicts.items() if section == "toy" and verdicts[("toy-frozen", cid)] != v}
    found = data["regimes"]
    assert {d["id"] for d in found["disagree"]} == differ and {"A", "sweep:beta=1"} <= differ
    assert "sweep:beta=2" not in differ  # does not in both
    assert found["compared"] == len({cid for section, cid in verdicts if section == "toy"})
    a = next(d for d in found["disagree"] if d["id"] == "A")
    assert a["dataset"] == "toy" and a["by_regime"] == {"scratch": HOLDS, "frozen": DOES_NOT}
    text = render(data)
    assert "## Where the regimes disagree" in text and "scratch: **holds**; frozen: **does not**" in text
    assert "| toy (frozen) |" in text and "## toy (frozen)" in text
    assert "| regime `frozen` | toy (~train.backbone_params.width, train.freeze_backbone=true) |" in text
    assert "| regime `scratch` | toy (params.yaml's model) |" in text


def _sweep_pairs(regime: str, value: float) -> list[float]:
    """nhl-A at `value` minus the reference nhl-noA-noD, in points, by loops over the construction."""
    setting = {0.5: "beta_0p5", 2.0: "beta_2"}.get(value)
    out = []
    for loss in LOSSES:
        for seed in SEEDS:
            for k in LENGTHS:
                a = _map(regime, setting or _reference(loss), loss, "nhl-A", seed, k)
                b = _map(regime, _reference(loss), loss, "nhl-noA-noD", seed, k)
                out.append(100 * (a - b))
    return out


def _holm3(p):  # Holm for three tests, written out
    order = sorted(range(3), key=lambda i: p[i])
    first = min(1, 3 * p[order[0]])
    second = max(first, min(1, 2 * p[order[1]]))
    third = max(second, p[order[2]])
    return {order[0]: first, order[1]: second, order[2]: third}


@pytest.mark.parametrize(
    "section, regime, expected",
    [("toy", "scratch", [HOLDS, HOLDS, DOES_NOT]), ("toy-frozen", "frozen", [PARTLY, DOES_NOT, DOES_NOT])],
)
def test_one_verdict_per_sweep_value_with_holm(toy, section, regime, expected):
    _, _, data = toy
    (sweep,) = data["datasets"][section]["sweeps"]
    assert [row["value"] for row in sweep["rows"]] == [0.5, 1.0, 2.0]
    raw = []
    for row in sweep["rows"]:
        diffs = _sweep_pairs(regime, row["value"])
        wins = sum(d > 0 for d in diffs)
        assert row["pooled"]["n"] == len(diffs) == 30
        assert row["pooled"]["mean"] == pytest.approx(sum(diffs) / len(diffs))
        assert row["pooled"]["p_value"] == pytest.approx(binomtest(wins, len(diffs)).pvalue)
        raw.append(row["pooled"]["p_value"])
    adjusted = _holm3(raw)
    assert [row["p_holm"] for row in sweep["rows"]] == pytest.approx([adjusted[i] for i in range(3)])
    assert [row["verdict"] for row in sweep["rows"]] == expected
    if regime == "frozen":  # 21 of 30 up: p < 0.05 alone, not after Holm's adjustment
        assert raw[0] < 0.05 <= sweep["rows"][0]["p_holm"]
    assert "Holm" in sweep["note"] and "3 values of train.beta" in sweep["note"]
    claims = [v for v in data["verdicts"] if v["dataset"] == section and v["id"].startswith("sweep:")]
    assert [c["id"] for c in claims] == ["sweep:beta=0.5", "sweep:beta=1", "sweep:beta=2"]
    assert [c["verdict"] for c in claims] == expected
    text = render(data)
    assert "## Sweeps of A and D" in text and sweep["note"] in text


def test_holm_known_values():
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([]) == [] and holm([0.5]) == [0.5] and holm([0.6, 0.9]) == [1.0, 1.0]
    with pytest.raises(ValueError, match="holm"):
        holm([1.5])


# -- the recommendation table ---------------------------------------------------------------------
def _candidates(regime: str, loss: str) -> list[tuple[str, str]]:
    rows = [("default", "baseline")] + [("default", v) for v in ("nhl-noA-noD", "nhl-A", "nhl-full")]
    if _centres(loss):
        rows += [("prefix", v) for v in ("nhl-noA-noD", "nhl-A", "nhl-full")]
    return rows + [("beta_0p5", "nhl-A"), ("beta_2", "nhl-A")]


def _curve(regime: str, setting: str, loss: str, variant: str) -> dict[int, float]:
    name = {k: f"baseline-{k}" if variant == "baseline" else variant for k in LENGTHS}
    return {k: sum(_map(regime, setting, loss, name[k], s, k) for s in SEEDS) / len(SEEDS) for k in LENGTHS}


@pytest.mark.parametrize("section, regime", [("toy", "scratch"), ("toy-frozen", "frozen")])
def test_recommendation_table_against_the_construction(toy, section, regime):
    _, _, data = toy
    recs = {r["loss"]: r for r in data["datasets"][section]["recommendations"]}
    for loss in LOSSES:
        scored = [
            (sum(c.values()) / 5, s, v, c) for s, v in _candidates(regime, loss) if (c := _curve(regime, s, loss, v))
        ]
        top = max(x[0] for x in scored)
        score, setting, variant, curve = next(x for x in scored if x[0] == top)
        best_value = max(curve.values())
        chosen = min(k for k, m in curve.items() if m >= best_value - 0.01 - 1e-12)
        rec = recs[loss]
        assert (rec["setting"], rec["variant"]) == (setting, variant)
        assert rec["mean_map"] == pytest.approx(score) and rec["chosen_length"] == chosen
        assert rec["curve"][str(chosen)] == pytest.approx(curve[chosen])
        assert rec["seeds"] == 3
        cell_setting = "default" if variant == "baseline" else setting
        prefix = "toy" if regime == "scratch" else "toy-frozen"
        assert rec["cells"] == [f"{prefix}-s{s}-{cell_setting}" for s in SEEDS]
    # by construction: csq with prefix centres and everything on; dch from scratch nested, frozen baselines
    assert (recs["csq"]["label"], recs["csq"]["centres"]) == ("nhl-full [prefix]", "prefix")
    assert recs["csq"]["chosen_length"] == 32 and recs["csq"]["best_length"] == 64
    expected_dch = "nhl-full" if regime == "scratch" else "baselines (one model per length)"
    assert recs["dch"]["label"] == expected_dch and recs["dch"]["centres"].startswith("—")
    text = render(data)
    table = text[text.index("## Recommendation per loss") : text.index("## Sweeps of A and D")]
    label = "toy (scratch)" if regime == "scratch" else "toy (frozen)"
    table = table[table.index(f"### {label}") :]
    row = next(line for line in table.splitlines() if line.startswith("| csq | nhl-full [prefix] | prefix | 32 bits"))
    assert f"cells {prefix}-s0-prefix, {prefix}-s1-prefix, {prefix}-s2-prefix" in row


# -- the dry run ----------------------------------------------------------------------------------
def test_dry_run_lists_the_cells_and_the_cost_per_regime(tmp_path, capsys):
    cost = {
        "seconds_per_model": {"toy": 20},
        "regime_seconds_per_model": {"frozen": {"toy": 5}},
        "regime_seconds_per_cell": {"frozen": {"toy": 100}},
    }
    (tmp_path / "plan.yaml").write_text(yaml.safe_dump({"experiment": PLAN, "cost": cost}, sort_keys=False))
    assert _driver().main(["--params", str(tmp_path / "plan.yaml"), "--dry-run"]) == 0
    out = capsys.readouterr().out
    per_seed = 2 * 8 + 3 + 2 * 1 + 2 * 1  # default, prefix (csq), beta_0p5 and beta_2 (csq, dch x nhl-A)
    scratch, frozen = 3 * per_seed * 20, 3 * per_seed * 5 + 12 * 100  # features in each of the 12 frozen cells
    assert f"claims: 24 cells, {2 * 3 * per_seed} models; estimated cost about {(scratch + frozen) / 3600:.1f} h" in out
    assert f"claims:   toy: 12 cells, {3 * per_seed} models, {scratch / 3600:.1f} h" in out
    assert f"claims:   toy-frozen: 12 cells, {3 * per_seed} models, {frozen / 3600:.1f} h" in out
    headers = [line for line in out.splitlines() if line.startswith("# ")]
    assert len(headers) == 24 and headers[0].startswith("# toy-s0-default: 16 models")
    assert any(line.startswith("# toy-frozen-s2-beta_2: 2 models (csq, dch x nhl-A)") for line in headers)
    assert "-S '~train.backbone_params.width'" in out
    assert math.isclose(scratch, 3 * 23 * 20)
