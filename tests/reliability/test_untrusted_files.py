"""Untrusted model and checkpoint files: a crafted pickle never runs, and the user gets one line.

Each attack file carries a pickle whose `__reduce__` would create a marker file when unpickled
(proved below by unpickling the same payload on purpose). It is given to `nhl encode --model`,
`nhl evaluate --model`, `nhl search --model` and the train stage's `--resume` checkpoint: each
exits 2 with one stderr line, no traceback, and the marker never appears.
"""

from __future__ import annotations

import importlib.util
import io
import os
import pickle
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from nhl import cli
from nhl.codes import Codes, save_codes
from nhl.models.hasher import Hasher, HasherSpec, load_hasher, save_hasher

ROOT = Path(__file__).resolve().parents[2]


class Payload:
    """Unpickling this runs `os.system("touch <marker>")`."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


class ExecPayload(Payload):
    """Unpickling this runs `exec(...)`, which writes the marker."""

    def __reduce__(self):
        return exec, (f"open({str(self.marker)!r}, 'w').write('pwned')",)


def attack_files(folder: Path, marker: Path) -> dict[str, Path]:
    """The crafted files: a torch zip with our format field around a payload, a bare pickle, a torch
    zip whose state dict holds a payload, and one using `exec` instead of `os.system`."""
    folder.mkdir(parents=True, exist_ok=True)
    files = {}
    torch.save(
        {"format": "nhl-hasher/1", "spec": Payload(marker), "state_dict": {}, "extra": {}}, folder / "zip-spec.pt"
    )
    files["zip-spec"] = folder / "zip-spec.pt"
    (folder / "bare.pt").write_bytes(pickle.dumps({"format": "nhl-hasher/1", "x": Payload(marker)}, protocol=2))
    files["bare-pickle"] = folder / "bare.pt"
    torch.save(
        {"format": "nhl-hasher/1", "spec": {}, "state_dict": {"w": ExecPayload(marker)}}, folder / "zip-state.pt"
    )
    files["zip-state-exec"] = folder / "zip-state.pt"
    return files


@pytest.fixture
def marker(tmp_path) -> Path:
    return tmp_path / "PWNED"


def test_the_payload_is_live_when_unpickled_on_purpose(tmp_path):
    """The attack is real: plain unpickling of the same bytes creates the marker."""
    proof = tmp_path / "proof"
    pickle.loads(pickle.dumps(Payload(proof)))
    assert proof.exists()
    other = tmp_path / "proof2"
    with zipfile.ZipFile(attack_files(tmp_path / "f", other)["zip-state-exec"]) as archive:
        data = archive.read(next(n for n in archive.namelist() if n.endswith("data.pkl")))

    class Unpickler(pickle.Unpickler):
        def persistent_load(self, pid):
            return None

    Unpickler(io.BytesIO(data)).load()
    assert other.read_text() == "pwned"


def one_line_exit_2(capsys, argv: list[str], *fragments: str) -> str:
    capsys.readouterr()
    code = cli.main(argv)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, err
    assert len(lines) == 1 and "Traceback" not in err, err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


@pytest.fixture(scope="module")
def project(tmp_path_factory, digits_manifest_dir):
    """A manifest, two query PNGs and a 16-bit codes file, for the commands to run against."""
    root = tmp_path_factory.mktemp("untrusted")
    shutil.copytree(digits_manifest_dir, root / "splits")
    (root / "img").mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        Image.fromarray(rng.integers(0, 256, (8, 8), dtype=np.uint8)).save(root / "img" / f"q{i}.png")
    codes = np.where(rng.random((20, 16)) < 0.5, -1, 1)
    save_codes(root / "db.npz", Codes.from_codes(codes, model={"lengths": [8, 16], "model_id": "m"}))
    return root


COMMANDS = {
    "encode": lambda p, m: ["encode", str(p / "img"), "--model", str(m), "--out", str(p / "out.npz")],
    "evaluate": lambda p, m: ["evaluate", "--model", str(m), "--manifest", str(p / "splits")],
    "search": lambda p, m: ["search", str(p / "db.npz"), str(p / "img" / "q0.png"), "--model", str(m)],
}


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_commands_refuse_a_crafted_model_file(command, project, tmp_path, marker, capsys):
    for kind, path in attack_files(tmp_path / "files", marker).items():
        line = one_line_exit_2(capsys, COMMANDS[command](project, path), path.name)
        assert "refused" in line or "cannot be read" in line, (kind, line)
        assert not marker.exists(), f"{command} ran the payload of {kind}"
    assert not (project / "out.npz").exists()


def test_refusal_names_the_object_and_how_to_convert(tmp_path, marker):
    path = attack_files(tmp_path, marker)["zip-spec"]
    with pytest.raises(ValueError) as caught:
        load_hasher(path)
    message = str(caught.value)
    assert "posix.system" in message and "could run code" in message
    assert f"python -m nhl.models.convert {path}" in message and "\n" not in message
    assert not marker.exists()


def test_train_resume_refuses_a_crafted_checkpoint(project, tmp_path, marker, capsys, monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "pipelines"))
    spec = importlib.util.spec_from_file_location("nhl_untrusted_train", ROOT / "pipelines" / "train.py")
    stage = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(stage)
    train = {
        "backbone": "smallcnn",
        "backbone_params": {"width": 8},
        "lengths": [8, 16],
        "epochs": 1,
        "batch_size": 100,
        "lr": 0.001,
        "seed": 0,
        "device": "cpu",
    }
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"train": train, "losses": {}}))
    checkpoint = tmp_path / "models" / "checkpoints" / "csq-nhl-full" / "last.pt"
    for kind, path in attack_files(tmp_path / "files", marker).items():
        checkpoint.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, checkpoint)
        capsys.readouterr()
        code = stage.main(
            [
                "--params",
                str(tmp_path / "params.yaml"),
                "--loss",
                "csq",
                "--variant",
                "nhl-full",
                "--manifest",
                str(project / "splits"),
                "--out",
                str(tmp_path / "models"),
                "--no-track",
                "--resume",
            ]
        )
        err = capsys.readouterr().err
        lines = [line for line in err.splitlines() if line.strip()]
        assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
        assert "last.pt" in lines[0] and ("refused" in lines[0] or "cannot be read" in lines[0]), lines[0]
        assert not marker.exists(), f"--resume ran the payload of {kind}"
        assert not (tmp_path / "models" / "csq" / "csq-nhl-full.pt").exists()


def tiny_model() -> Hasher:
    torch.manual_seed(0)
    return Hasher(HasherSpec("smallcnn", 1, (8, 16), {"width": 8})).eval()


def test_an_older_file_with_numpy_metadata_is_refused_then_converted(tmp_path):
    """A trusted file whose metadata holds numpy scalars (not plain values) gets the conversion
    command; after `python -m nhl.models.convert` it loads with the same weights."""
    from nhl.models import convert

    model = tiny_model()
    path = tmp_path / "old.pt"
    torch.save(
        {
            "format": "nhl-hasher/1",
            "spec": {
                "backbone": "smallcnn",
                "in_channels": 1,
                "lengths": (8, 16),
                "backbone_kwargs": {"width": 8},
                "input_size": None,
            },
            "state_dict": model.state_dict(),
            "extra": {"model_id": "old", "best": np.float64(0.5)},
        },
        path,
    )
    with pytest.raises(ValueError, match="numpy.*python -m nhl.models.convert"):
        load_hasher(path)
    assert convert.main([str(path)]) == 0
    loaded, extra = load_hasher(path)
    assert extra == {"model_id": "old", "best": 0.5} and type(extra["best"]) is float
    for key, tensor in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], tensor)


@pytest.mark.parametrize(
    "payload, fragment",
    [
        ({"format": "nhl-hasher/1", "spec": {"backbone": "smallcnn"}, "state_dict": {}}, "bad spec"),
        (
            {
                "format": "nhl-hasher/1",
                "spec": {"backbone": "smallcnn", "in_channels": 1, "lengths": [8], "backbone_kwargs": {}, "evil": 1},
                "state_dict": {},
            },
            "bad spec",
        ),
        (
            {
                "format": "nhl-hasher/1",
                "spec": {"backbone": "no-such-net", "in_channels": 1, "lengths": [8]},
                "state_dict": {},
            },
            "bad spec",
        ),
        ({"format": "nhl-hasher/1", "spec": [], "state_dict": {}}, "not an nhl model"),
        ({"format": "nhl-hasher/1", "spec": {}, "state_dict": {"w": "not a tensor"}}, "not an nhl model"),
        ({"format": "something else", "state_dict": {}}, "not an nhl model"),
        (
            {
                "format": "nhl-hasher/1",
                "spec": {"backbone": "smallcnn", "in_channels": 1, "lengths": [8], "backbone_kwargs": {"width": 2**20}},
                "state_dict": {},
            },
            "weights do not match its configuration",
        ),  # a huge network the file does not back: nothing allocated
        (torch.zeros(3), "not an nhl model"),
    ],
)
def test_malformed_payloads_are_one_line_errors(tmp_path, payload, fragment):
    torch.save(payload, tmp_path / "m.pt")
    with pytest.raises(ValueError, match=fragment) as caught:
        load_hasher(tmp_path / "m.pt")
    assert "\n" not in str(caught.value)


def test_saved_models_round_trip_under_the_safe_loader(tmp_path):
    model = tiny_model()
    save_hasher(model, tmp_path / "m.pt", extra={"model_id": "tiny", "history": [{"epoch": 1, "loss": 0.5}]})
    loaded, extra = load_hasher(tmp_path / "m.pt")
    assert extra["history"] == [{"epoch": 1, "loss": 0.5}]
    assert not any(t.is_meta for t in loaded.state_dict().values())
    assert all(p.requires_grad for p in loaded.parameters())
    x = torch.rand(4, 1, 8, 8)
    assert torch.equal(loaded.encode(x), model.encode(x))


def test_weights_of_another_shape_or_dtype_are_one_line_errors(tmp_path):
    state = tiny_model().state_dict()
    spec = {"backbone": "smallcnn", "in_channels": 1, "lengths": (8, 16), "backbone_kwargs": {"width": 8}}
    for key, tensor, fragment in [
        ("head.linear.weight", torch.zeros(3, 3), "(3, 3)"),
        ("head.linear.weight", state["head.linear.weight"].double(), "torch.float64"),
    ]:
        torch.save({"format": "nhl-hasher/1", "spec": spec, "state_dict": {**state, key: tensor}}, tmp_path / "m.pt")
        with pytest.raises(ValueError, match="weights do not match its configuration") as caught:
            load_hasher(tmp_path / "m.pt")
        assert key in str(caught.value) and fragment in str(caught.value)
