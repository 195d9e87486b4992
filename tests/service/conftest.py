"""A tiny digits model trained for one epoch, shared by the `nhl serve` tests."""

from __future__ import annotations

from dataclasses import asdict

import pytest


@pytest.fixture(scope="session")
def served_model(tmp_path_factory, digits_splits):
    """A model file (lengths 8, 16, 32) trained 1 epoch on the digits split."""
    from nhl.models.hasher import save_hasher
    from nhl.training import TrainConfig, train_model

    root = tmp_path_factory.mktemp("serve-model")
    config = TrainConfig(
        loss="csq",
        lengths=(8, 16, 32),
        backbone="smallcnn",
        backbone_params={"width": 8},
        epochs=1,
        batch_size=64,
        device="cpu",
        seed=0,
    )
    result = train_model(
        config, digits_splits.train, digits_splits.val, digits_splits.train, root / "work", progress=False
    )
    save_hasher(result.model, root / "model.pt", extra={"model_id": "csq-nhl-full", "config": asdict(config)})
    return root / "model.pt"


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LiveServer:
    """A real uvicorn server on 127.0.0.1 in a background thread (`url`, `stop()`)."""

    def __init__(self, app) -> None:
        import threading
        import time

        import uvicorn

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.05)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
