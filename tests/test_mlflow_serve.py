"""The MLflow serving route: `mlflow models serve -m models:/<name>@champion --env-manager local`
answers `/invocations` with the same codes as `nhl encode`.

One server is started on a free loopback port (about 30-60 s on a busy 2-core machine). The
reference codes come from `nhl encode` on the same two PNG files, read back from its codes file.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from nhl import cli
from nhl.codes import load_codes

ROOT = Path(__file__).resolve().parents[1]
NAME = "nhl-serve-test"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def post(url: str, payload: dict) -> dict:
    request = urllib.request.Request(
        url, data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())


@pytest.mark.slow
def test_mlflow_models_serve_gives_the_codes_of_nhl_encode(tmp_path, fresh_store, monkeypatch, capsys):

    from nhl.models.hasher import Hasher, HasherSpec, save_hasher
    from nhl.registry import versions as v
    from nhl.tracking import ModelRun

    uri = fresh_store(tmp_path / "mlruns.db")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    torch.manual_seed(0)
    model_file = tmp_path / "models" / "csq-nhl-full.pt"
    save_hasher(
        Hasher(HasherSpec("smallcnn", 1, (8, 16, 32), {"width": 8}, input_size=12)),
        model_file,
        extra={"model_id": "csq-nhl-full"},
    )
    with ModelRun("csq-nhl-full", project_root=tmp_path) as run:
        run.log_model(model_file)
    client = v.registry_client(tmp_path)  # also MLflow's process-wide URI, which registering reads
    version = v.register_version(client, NAME, client.get_run(run.run_id), {})
    client.set_registered_model_alias(NAME, v.CHAMPION, version.version)

    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):  # 10x10 grey: the model resizes to its input size, 12
        Image.fromarray(rng.integers(0, 256, (10, 10), dtype=np.uint8)).save(images / f"img{i}.png")
    assert cli.main(["encode", str(images), "--model", str(model_file), "--out", str(tmp_path / "codes.npz")]) == 0
    reference = load_codes(tmp_path / "codes.npz")
    assert list(reference.names) == ["img0.png", "img1.png"]

    port = free_port()
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "PYTHONPATH": str(ROOT), "MLFLOW_DISABLE_TELEMETRY": "true"}
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])  # mlflow execs `uvicorn`
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlflow",
            "models",
            "serve",
            "-m",
            f"models:/{NAME}@champion",
            "--env-manager",
            "local",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 180
        while True:
            assert server.poll() is None, server.stdout.read().decode()[-3000:]
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2) as response:
                    if response.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            assert time.monotonic() < deadline, "mlflow models serve did not answer /ping in 180 s"
            time.sleep(1)
        files = [base64.b64encode((images / f"img{i}.png").read_bytes()).decode() for i in range(2)]
        by_files = post(f"http://127.0.0.1:{port}/invocations", {"inputs": files})["predictions"]
        frame = {"dataframe_split": {"columns": ["image"], "data": [[f] for f in files]}}
        by_frame = post(f"http://127.0.0.1:{port}/invocations", frame)["predictions"]
        pixels = np.stack([np.asarray(Image.open(images / f"img{i}.png"), dtype=np.float32) / 255 for i in range(2)])
        by_array = post(f"http://127.0.0.1:{port}/invocations", {"inputs": pixels[:, None].tolist()})["predictions"]
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
    for predictions in (by_files, by_frame, by_array):
        assert sorted(predictions, key=int) == ["8", "16", "32"]
        for k in (8, 16, 32):
            np.testing.assert_array_equal(np.array(predictions[str(k)]), reference.codes(k))
