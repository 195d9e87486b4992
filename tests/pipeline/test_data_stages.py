"""The data stages (pipelines/fetch.py, split.py, validate.py) run end to end on digits in a
temporary directory, and a failing stage leaves no output behind."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
PIPELINES = ROOT / "pipelines"
DATA_STAGES = ("fetch", "split", "validate")


@pytest.fixture(scope="module")
def stages(tmp_path_factory):
    """The three stage modules, loaded from their files (they import pipelines/_params.py)."""
    patch = pytest.MonkeyPatch()
    patch.syspath_prepend(str(PIPELINES))
    modules = {}
    for name in DATA_STAGES:
        spec = importlib.util.spec_from_file_location(f"nhl_stage_{name}", PIPELINES / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        modules[name] = module
    yield modules
    patch.undo()


def _params(path: Path, **data) -> Path:
    base = {
        "dataset": "digits",
        "root": None,
        "options": {},
        "protocol": "digits",
        "seed": 0,
        "query": None,
        "train": None,
        "val": None,
        "train_in_database": None,
        "validate_sample": 8,
    }
    path.write_text(yaml.safe_dump({"data": {**base, **data}}))
    return path


@pytest.fixture(scope="module")
def digits_run(stages, tmp_path_factory):
    """fetch -> split -> validate on digits; returns the directory and the return codes."""
    tmp = tmp_path_factory.mktemp("digits")
    params = _params(tmp / "params.yaml")
    codes = [
        stages["fetch"].main(["--params", str(params), "--out", str(tmp / "raw")]),
        stages["split"].main(["--params", str(params), "--raw", str(tmp / "raw"), "--out", str(tmp / "splits")]),
        stages["validate"].main(
            ["--params", str(params), "--manifest", str(tmp / "splits"), "--out", str(tmp / "report")]
        ),
    ]
    return tmp, codes


def test_stages_run_on_digits(digits_run):
    tmp, codes = digits_run
    assert codes == [0, 0, 0]
    assert sorted(p.name for p in (tmp / "raw").iterdir()) == ["images.npy", "labels.npy", "source.json"]
    assert np.load(tmp / "raw/images.npy").shape == (1797, 8, 8)
    meta = json.loads((tmp / "splits/manifest.json").read_text())
    assert meta["sizes"] == {"train": 500, "val": 100, "query": 100, "database": 1097}
    assert meta["raw_dir"] == str(tmp / "raw") and meta["customised"] == []
    result = json.loads((tmp / "report/result.json").read_text())
    assert result["success"] is True
    assert (result["protocol"], result["seed"], result["content_hash"]) == ("digits", 0, meta["content_hash"])
    assert "**PASSED**" in (tmp / "report/audit.md").read_text()
    leftovers = [p.name for p in tmp.iterdir() if p.name.startswith(".")]
    assert leftovers == []  # no temporary directories left behind


def test_split_is_deterministic_and_seeded(stages, digits_run, tmp_path):
    tmp, _ = digits_run
    first = (tmp / "splits/manifest.csv").read_bytes()
    params = _params(tmp_path / "p.yaml")
    assert (
        stages["split"].main(["--params", str(params), "--raw", str(tmp / "raw"), "--out", str(tmp_path / "again")])
        == 0
    )
    assert (tmp_path / "again/manifest.csv").read_bytes() == first
    other = _params(tmp_path / "q.yaml", seed=1)
    assert (
        stages["split"].main(["--params", str(other), "--raw", str(tmp / "raw"), "--out", str(tmp_path / "other")]) == 0
    )
    assert (tmp_path / "other/manifest.csv").read_bytes() != first


def test_params_counts_override_the_protocol(stages, digits_run, tmp_path):
    tmp, _ = digits_run
    params = _params(tmp_path / "p.yaml", query=5, train_in_database=True)
    assert stages["split"].main(["--params", str(params), "--raw", str(tmp / "raw"), "--out", str(tmp_path / "s")]) == 0
    meta = json.loads((tmp_path / "s/manifest.json").read_text())
    assert meta["sizes"]["query"] == 50 and meta["sizes"]["database"] == 1797 - 50
    assert meta["customised"] == ["query", "train_in_database"]


def _assert_failed(capsys, code, fragment, *absent):
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert fragment in err and "\n" not in err
    for path in absent:
        assert not path.exists(), path


def test_fetch_failures_write_nothing(stages, tmp_path, capsys):
    fetch = stages["fetch"].main
    out = tmp_path / "raw"
    _assert_failed(
        capsys,
        fetch(["--params", str(_params(tmp_path / "a.yaml", dataset="mnist")), "--out", str(out)]),
        "unknown dataset 'mnist'",
        out,
    )
    cifar = _params(tmp_path / "b.yaml", dataset="cifar10", root=str(tmp_path / "ext"))
    _assert_failed(capsys, fetch(["--params", str(cifar), "--out", str(out)]), "CIFAR-10 files missing", out)
    _assert_failed(capsys, fetch(["--params", str(tmp_path / "none.yaml"), "--out", str(out)]), "not found", out)
    (tmp_path / "empty.yaml").write_text("train: {}\n")
    _assert_failed(
        capsys, fetch(["--params", str(tmp_path / "empty.yaml"), "--out", str(out)]), "no `data` section", out
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.yaml", "b.yaml", "empty.yaml"]


@pytest.mark.parametrize(
    "change, fragment",
    [
        ({"query": 500}, "needs 500 (query 500)"),
        ({"train": -1}, "train must be a positive integer"),
        ({"val": 0}, "val must be a positive integer"),
        ({"protocol": "cifar"}, "unknown protocol 'cifar'"),
        ({"dataset": "mnist5k"}, "holds dataset 'digits'"),
        ({"seed": "zero"}, "data.seed must be an integer"),
    ],
)
def test_split_failures_leave_the_previous_output(stages, digits_run, tmp_path, capsys, change, fragment):
    tmp, _ = digits_run
    out = tmp_path / "splits"
    good = _params(tmp_path / "good.yaml")
    assert stages["split"].main(["--params", str(good), "--raw", str(tmp / "raw"), "--out", str(out)]) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    capsys.readouterr()
    bad = _params(tmp_path / "bad.yaml", **change)
    code = stages["split"].main(["--params", str(bad), "--raw", str(tmp / "raw"), "--out", str(out)])
    _assert_failed(capsys, code, fragment)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.yaml", "good.yaml", "splits"]
    fresh = tmp_path / "fresh"
    _assert_failed(
        capsys,
        stages["split"].main(["--params", str(bad), "--raw", str(tmp / "raw"), "--out", str(fresh)]),
        fragment,
        fresh,
    )


def test_validate_without_manifest_writes_nothing(stages, tmp_path, capsys):
    out = tmp_path / "report"
    code = stages["validate"].main(
        ["--params", str(_params(tmp_path / "p.yaml")), "--manifest", str(tmp_path / "x"), "--out", str(out)]
    )
    _assert_failed(capsys, code, "not found", out)


def test_validate_failure_still_writes_the_report(stages, digits_run, tmp_path, capsys):
    tmp, _ = digits_run
    broken = tmp_path / "splits"
    broken.mkdir()
    text = (tmp / "splits/manifest.csv").read_text().splitlines()
    (broken / "manifest.csv").write_text("\n".join(text[:-1]) + "\n")  # drop the last database row
    (broken / "manifest.json").write_text((tmp / "splits/manifest.json").read_text())
    code = stages["validate"].main(
        ["--params", str(_params(tmp_path / "p.yaml")), "--manifest", str(broken), "--out", str(tmp_path / "report")]
    )
    assert code == 1
    err = capsys.readouterr().err
    assert "database has 1097 rows as protocol digits says" in err and "content hash matches manifest.json" in err
    assert json.loads((tmp_path / "report/result.json").read_text())["success"] is False


def test_imagelist_end_to_end_reports_missing_images(stages, tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    lines = []
    for n in range(40):
        if n % 10 != 3:
            Image.fromarray(np.full((4, 4, 3), n, dtype=np.uint8)).save(images / f"{n}.png")
        lines.append(f"{n}.png " + " ".join("1" if c == n % 4 else "0" for c in range(4)))
    (images / "list.txt").write_text("\n".join(lines) + "\n")
    params = _params(
        tmp_path / "p.yaml",
        dataset="imagelist",
        root=str(images),
        protocol="coco",
        options={"lists": "list.txt", "allow_missing": True},
        query=4,
        train=8,
        val=4,
        validate_sample=4,
    )
    assert stages["fetch"].main(["--params", str(params), "--out", str(tmp_path / "raw")]) == 0
    assert (
        stages["split"].main(
            ["--params", str(params), "--raw", str(tmp_path / "raw"), "--out", str(tmp_path / "splits")]
        )
        == 0
    )
    assert (
        stages["validate"].main(
            ["--params", str(params), "--manifest", str(tmp_path / "splits"), "--out", str(tmp_path / "rep")]
        )
        == 0
    )
    result = json.loads((tmp_path / "rep/result.json").read_text())
    assert result["missing_images"] == {"count": 4, "paths": ["3.png", "13.png", "23.png", "33.png"]}
    assert result["sizes"] == {"train": 8, "val": 4, "query": 4, "database": 32}
    assert "4 listed images were missing" in (tmp_path / "rep/audit.md").read_text()


def test_dvc_data_stages_depend_only_on_files_in_the_repo():
    dvc = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    for name in DATA_STAGES:
        stage = dvc["stages"][name]
        assert f"pipelines/{name}.py" in stage["deps"]
        for dep in stage["deps"]:
            assert not Path(dep).is_absolute() and ".." not in Path(dep).parts
            if not dep.startswith("data/"):
                assert (ROOT / dep).is_file(), dep
        for key in stage["params"]:
            section, field = key.split(".")
            assert field in params[section], key
    assert params["data"]["dataset"] == "mnist5k" and params["data"]["protocol"] == "mnist5k"
