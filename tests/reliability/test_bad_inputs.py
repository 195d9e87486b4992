"""Bad inputs through the user-facing entry points: one clear line, and nothing on disk changed.

Each case runs a stage's `main(argv)` (pipelines/*.py) or `nhl.cli.main([...])` in this process
and checks that it exits 2 with exactly one line on stderr (no traceback) naming the field or
file and what was expected, and that the work directory, inputs and earlier outputs included,
is exactly as before: same file names, modification times and SHA-256 hashes, no new folder.
The last case is the opposite: an unreachable MLflow store is not an error, training completes
and says tracking was skipped.

Root ignores permission bits, so "unwritable output directory" is an output path below a regular
file, which no user can create.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from nhl import cli
from nhl.codes import Codes, save_codes
from nhl.data.dataset import load_split
from nhl.models.hasher import Hasher, HasherSpec, save_hasher
from nhl.training import TrainConfig, Trainer

ROOT = Path(__file__).resolve().parents[2]
PIPELINES = ROOT / "pipelines"
TRAIN = {
    "backbone": "smallcnn",
    "backbone_params": {"width": 8},
    "lengths": [8, 16],
    "epochs": 1,
    "batch_size": 100,
    "lr": 0.001,
    "seed": 0,
    "device": "cpu",
}
DATA = {
    "dataset": "digits",
    "root": None,
    "options": {},
    "protocol": "digits",
    "seed": 0,
    "query": None,
    "train": None,
    "val": None,
    "train_in_database": None,
    "validate_sample": 4,
}


@pytest.fixture(scope="module")
def stages():
    """The stage modules, loaded from their files (they import pipelines/_params.py)."""
    patch = pytest.MonkeyPatch()
    patch.syspath_prepend(str(PIPELINES))
    modules = {}
    for name in ("fetch", "split", "validate", "train", "evaluate"):
        spec = importlib.util.spec_from_file_location(f"nhl_reliability_{name}", PIPELINES / f"{name}.py")
        modules[name] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(modules[name])
    yield modules
    patch.undo()


@pytest.fixture
def ws(tmp_path, digits_manifest_dir):
    """A work directory: a copy of the digits manifest, params files and an earlier model output."""
    import shutil

    shutil.copytree(digits_manifest_dir, tmp_path / "splits")
    (tmp_path / "models" / "csq").mkdir(parents=True)
    (tmp_path / "models" / "csq" / "csq-nhl-full.pt").write_bytes(b"an earlier model output")
    return tmp_path


def params(ws: Path, train: dict | None = None, data: dict | None = None, losses: dict | None = None) -> Path:
    path = ws / "params.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "data": {**DATA, **(data or {})},
                "train": {**TRAIN, **(train or {})},
                "losses": losses or {},
                "evaluate": {"topk": None, "pr_lengths": [8, 16]},
            }
        )
    )
    return path


def train_args(ws: Path, *extra: str, loss: str = "csq", variant: str = "nhl-full") -> list[str]:
    return [
        "--params",
        str(ws / "params.yaml"),
        "--loss",
        loss,
        "--variant",
        variant,
        "--manifest",
        str(ws / "splits"),
        "--out",
        str(ws / "models"),
        "--no-track",
        *extra,
    ]


def snapshot(root: Path) -> dict[str, object]:
    """Every file's (mtime, size, sha256) and every folder under `root`."""
    state: dict[str, object] = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if path.is_dir():
            state[rel + "/"] = "dir"
        else:
            info = path.stat()
            state[rel] = (info.st_mtime_ns, info.st_size, hashlib.sha256(path.read_bytes()).hexdigest())
    return state


def fails_cleanly(ws: Path, capsys, call, *fragments: str) -> str:
    """Run `call()`; it must return 2 with one stderr line holding `fragments`, changing nothing."""
    capsys.readouterr()
    before = snapshot(ws)
    code = call()
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    print(f"\n    -> {err.strip()}")  # the message, for `pytest -s` readers
    assert code == 2, err
    assert len(lines) == 1 and "Traceback" not in err, err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    assert snapshot(ws) == before, "outputs or inputs changed on disk"
    return lines[0]


def edit_manifest(ws: Path, edit) -> None:
    csv = ws / "splits" / "manifest.csv"
    lines = csv.read_text().splitlines()
    csv.write_text("\n".join(edit(lines)) + "\n")


@pytest.fixture
def with_search():
    """`nhl search` through `nhl.cli.main`, as users call it."""
    assert "search" in cli.COMMAND_MODULES


def codes_file(path: Path, bits: int, lengths: list[int]) -> Path:
    codes = np.where(np.random.default_rng(bits).random((20, bits)) < 0.5, -1, 1)
    save_codes(path, Codes.from_codes(codes, model={"lengths": lengths, "model_id": f"m{bits}"}))
    return path


def image_list(ws: Path, lines: list[str]) -> Path:
    """8x8 grey PNGs a0..a4 (class 0) and b0..b4 (class 1) under images/, and a list file."""
    from PIL import Image

    folder = ws / "images" / "img"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in [f"{c}{i}" for c in "ab" for i in range(5)]:
        Image.fromarray(rng.integers(0, 256, (8, 8), dtype=np.uint8)).save(folder / f"{name}.png")
    (ws / "images" / "list.txt").write_text("\n".join(lines) + "\n")
    return ws / "images"


INDEX_LIST = [f"img/{c}{i}.png {label}" for c, label in (("a", 0), ("b", 1)) for i in range(5)]


# --------------------------------------------------------------------------- data stages


def test_unknown_dataset(ws, stages, capsys):
    params(ws, data={"dataset": "nosuch"})
    fails_cleanly(
        ws,
        capsys,
        lambda: stages["fetch"].main(["--params", str(ws / "params.yaml"), "--out", str(ws / "raw")]),
        "'nosuch'",
        "known datasets: ",
        "digits",
    )


def test_missing_listed_image(ws, stages, capsys):
    root = image_list(ws, INDEX_LIST + ["img/c0.png 1"])
    params(ws, data={"dataset": "imagelist", "root": str(root), "options": {"lists": "list.txt"}})
    fails_cleanly(
        ws,
        capsys,
        lambda: stages["fetch"].main(["--params", str(ws / "params.yaml"), "--out", str(ws / "raw")]),
        "img/c0.png",
        "list.txt",
        "allow_missing",
    )


def test_list_file_with_a_wrong_label_count(ws, stages, capsys):
    lines = [f"img/a{i}.png 1 0" for i in range(5)] + ["img/b0.png 0 1 0"]
    root = image_list(ws, lines)
    params(ws, data={"dataset": "imagelist", "root": str(root), "options": {"lists": "list.txt"}})
    fails_cleanly(
        ws,
        capsys,
        lambda: stages["fetch"].main(["--params", str(ws / "params.yaml"), "--out", str(ws / "raw")]),
        "list.txt line 6",
        "3 label values, expected 2",
    )


@pytest.mark.parametrize("field, value", [("train", 2.5), ("query", -3)])
def test_non_integer_or_negative_split_count(ws, stages, capsys, digits_manifest_dir, field, value):
    params(ws, data={field: value})
    raw = digits_manifest_dir.parent / "raw"
    fails_cleanly(
        ws,
        capsys,
        lambda: stages["split"].main(
            ["--params", str(ws / "params.yaml"), "--raw", str(raw), "--out", str(ws / "splits")]
        ),
        f"data.{field} must be a positive integer",
        repr(value),
    )


def test_validate_sample_of_the_wrong_type(ws, stages, capsys):
    params(ws, data={"validate_sample": "many"})
    fails_cleanly(
        ws,
        capsys,
        lambda: stages["validate"].main(
            ["--params", str(ws / "params.yaml"), "--manifest", str(ws / "splits"), "--out", str(ws / "report")]
        ),
        "data.validate_sample",
        "non-negative integer",
        "'many'",
    )


# --------------------------------------------------------------------------- train stage / nhl train


def test_unknown_loss(ws, stages, capsys):
    params(ws)
    fails_cleanly(ws, capsys, lambda: stages["train"].main(train_args(ws, loss="nosuch")), "'nosuch'", "csq")


def test_unknown_backbone_through_the_cli(ws, capsys):
    params(ws)
    argv = [
        "train",
        "--loss",
        "csq",
        "--params",
        str(ws / "params.yaml"),
        "--manifest",
        str(ws / "splits"),
        "--out",
        str(ws / "models"),
        "--backbone",
        "nosuch",
        "--no-track",
    ]
    fails_cleanly(ws, capsys, lambda: cli.main(argv), "nhl train: error:", "'nosuch'", "smallcnn")


@pytest.mark.parametrize("lengths, expected", [([16, 8], "strictly increasing"), ([8, 0], "positive integers")])
def test_bad_lengths(ws, stages, capsys, lengths, expected):
    params(ws, train={"lengths": lengths})
    fails_cleanly(ws, capsys, lambda: stages["train"].main(train_args(ws)), "train.lengths", expected, str(lengths))


def test_baseline_longer_than_the_configured_lengths(ws, stages, capsys):
    params(ws)
    fails_cleanly(
        ws, capsys, lambda: stages["train"].main(train_args(ws, variant="baseline-32")), "baseline-32", "[8, 16]"
    )


@pytest.mark.parametrize(
    "key, value, expected",
    [
        ("epochs", "three", "train.epochs: expected int"),
        ("epochs", -1, "train.epochs: expected an integer >= 0"),
        ("batch_size", 2.5, "train.batch_size: expected int"),
        ("lr", float("nan"), "train.lr: expected a non-negative number, got nan"),
    ],
)
def test_params_yaml_with_a_wrong_type_or_value(ws, stages, capsys, key, value, expected):
    params(ws, train={key: value})
    fails_cleanly(ws, capsys, lambda: stages["train"].main(train_args(ws)), expected)


def test_params_section_of_the_wrong_type(ws, stages, capsys):
    (ws / "params.yaml").write_text(yaml.safe_dump({"train": [1, 2], "losses": {}}))
    fails_cleanly(ws, capsys, lambda: stages["train"].main(train_args(ws)), "params.yaml", "`train`")


def test_empty_split(ws, stages, capsys):
    params(ws)
    edit_manifest(ws, lambda lines: [line.replace(",val", ",train") for line in lines])
    fails_cleanly(ws, capsys, lambda: stages["train"].main(train_args(ws)), "splits", "the val split is empty")


def test_labels_out_of_range(ws, stages, capsys):
    params(ws)

    def label_12(lines: list[str]) -> list[str]:  # item_id,row,labels,split: the first item gets label 12
        item_id, row, _, split = lines[1].split(",")
        return [lines[0], f"{item_id},{row},12,{split}", *lines[2:]]

    edit_manifest(ws, label_12)
    fails_cleanly(
        ws, capsys, lambda: stages["train"].main(train_args(ws)), "manifest.csv", "12", "out of range for 10 classes"
    )


def test_corrupt_image(ws, stages, capsys):
    root = image_list(ws, INDEX_LIST)
    params(
        ws,
        data={
            "dataset": "imagelist",
            "root": str(root),
            "options": {"lists": "list.txt"},
            "query": 1,
            "train": 2,
            "val": 1,
        },
    )
    assert stages["fetch"].main(["--params", str(ws / "params.yaml"), "--out", str(ws / "raw")]) == 0
    assert (
        stages["split"].main(
            ["--params", str(ws / "params.yaml"), "--raw", str(ws / "raw"), "--out", str(ws / "splits")]
        )
        == 0
    )
    frame = load_split(ws / "splits", "train").frame
    bad = root / frame.at[0, "path"]
    bad.write_bytes(b"not a png at all")
    fails_cleanly(ws, capsys, lambda: stages["train"].main(train_args(ws)), str(bad), "cannot be decoded")


def test_nan_loss(ws, stages, capsys):
    params(ws, losses={"csq": {"quant_weight": float("nan")}})
    fails_cleanly(ws, capsys, lambda: stages["train"].main(train_args(ws)), "loss csq became nan", "epoch 1")


def _checkpoint(ws: Path, **changes) -> Path:
    """A real epoch checkpoint of the csq nhl-full model, written by a Trainer with `changes`."""
    config = TrainConfig.from_mapping({**TRAIN, "loss": "csq", "adaptive": True, "distill": True, **changes})
    train = load_split(ws / "splits", "train")
    workdir = ws / "models" / "checkpoints" / "csq-nhl-full"
    Trainer(config, train, load_split(ws / "splits", "val"), train, workdir, progress=False).save_checkpoint()
    return workdir / "last.pt"


def test_resume_from_a_checkpoint_of_another_configuration(ws, stages, capsys):
    params(ws)
    _checkpoint(ws, lr=0.003)
    fails_cleanly(
        ws,
        capsys,
        lambda: stages["train"].main(train_args(ws, "--resume")),
        "last.pt",
        "different configuration",
        "['lr']",
    )


def test_resume_from_a_truncated_checkpoint(ws, stages, capsys):
    params(ws)
    path = _checkpoint(ws)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    fails_cleanly(ws, capsys, lambda: stages["train"].main(train_args(ws, "--resume")), "last.pt", "cannot be read")


def test_unwritable_model_directory(ws, stages, capsys):
    params(ws)
    (ws / "blocker").write_text("a file, not a folder")
    argv = train_args(ws)
    argv[argv.index("--out") + 1] = str(ws / "blocker" / "models")
    fails_cleanly(ws, capsys, lambda: stages["train"].main(argv), "blocker", "is not a directory")


# --------------------------------------------------------------------------- evaluate stage


def _model(ws: Path, in_channels: int = 1) -> Path:
    path = ws / "models" / "m.pt"
    torch.manual_seed(0)
    save_hasher(
        Hasher(HasherSpec("smallcnn", in_channels, (8, 16), {"width": 8})),
        path,
        extra={"model_id": "m", "config": {"loss": "csq", "lengths": [8, 16]}},
    )
    return path


def _evaluate(stages, ws: Path, model: Path, metrics_dir: Path | None = None):
    return lambda: stages["evaluate"].main(
        [
            "--params",
            str(ws / "params.yaml"),
            "--model",
            str(model),
            "--manifest",
            str(ws / "splits"),
            "--metrics-dir",
            str(metrics_dir or ws / "metrics"),
            "--plots-dir",
            str(ws / "plots"),
            "--no-track",
        ]
    )


def test_model_file_of_another_configuration(ws, stages, capsys):
    params(ws)
    model = _model(ws, in_channels=3)
    fails_cleanly(ws, capsys, _evaluate(stages, ws, model), "m.pt", "3-channel", "have 1")


def test_truncated_model_file(ws, stages, capsys):
    params(ws)
    model = _model(ws)
    model.write_bytes(model.read_bytes()[:1000])
    fails_cleanly(ws, capsys, _evaluate(stages, ws, model), "m.pt", "cannot be read")


def test_unwritable_metrics_directory_writes_no_plots_either(ws, stages, capsys):
    params(ws)
    model = _model(ws)
    (ws / "blocker").write_text("a file, not a folder")
    fails_cleanly(ws, capsys, _evaluate(stages, ws, model, ws / "blocker" / "metrics"), "blocker", "is not a directory")


# --------------------------------------------------------------------------- nhl search


def test_search_with_codes_of_another_width(ws, capsys, with_search):
    db = codes_file(ws / "db.npz", 16, [8, 16])
    queries = codes_file(ws / "q.npz", 32, [8, 16, 32])
    fails_cleanly(
        ws,
        capsys,
        lambda: cli.main(["search", str(db), "--query-codes", str(queries)]),
        "nhl search: error:",
        "q.npz",
        "32-bit",
        "16-bit",
    )


def test_search_with_a_length_above_the_code_size(ws, capsys, with_search):
    db = codes_file(ws / "db.npz", 16, [8, 16])
    fails_cleanly(
        ws,
        capsys,
        lambda: cli.main(["search", str(db), "--query-codes", str(db), "--bits", "32"]),
        "--bits",
        "32",
        "[8, 16]",
    )


def test_search_with_a_truncated_codes_file(ws, capsys, with_search):
    db = codes_file(ws / "db.npz", 16, [8, 16])
    db.write_bytes(db.read_bytes()[:100])
    fails_cleanly(
        ws, capsys, lambda: cli.main(["search", str(db), "--query-codes", str(db)]), "db.npz", "cannot be read"
    )


# --------------------------------------------------------------------------- tracking is a side channel


def test_unreachable_mlflow_store_is_skipped_and_training_completes(ws, stages, capsys, caplog, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")
    params(ws)
    argv = [a for a in train_args(ws) if a != "--no-track"]
    with caplog.at_level(logging.WARNING, logger="nhl.tracking"):
        code = stages["train"].main(argv)
    out = capsys.readouterr().out
    assert code == 0
    warnings = [r.getMessage() for r in caplog.records if r.name == "nhl.tracking"]
    print(f"\n    -> {warnings}")
    assert len(warnings) == 1 and "tracking skipped" in warnings[0] and "127.0.0.1:9" in warnings[0]
    saved = torch.load(ws / "models" / "csq" / "csq-nhl-full.pt", weights_only=True)
    assert saved["extra"]["mlflow_run_id"] is None and "csq-nhl-full" in out
    assert not (ws / "models" / "checkpoints" / "csq-nhl-full").exists()
