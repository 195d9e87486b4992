"""`nhl ui` as a user sees it, in a real browser (headless Chromium from the Debian packages).

Opening the experiment must land on the training runs (not MLflow 3's GenAI overview), and the
runs table must show each run's data in its Dataset column. `.ci/run` installs the browser.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import time
import urllib.request

import pytest

from nhl import tracking
from nhl.commands import ui

RUNS = ["csq-baseline-8", "csq-nhl-full"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def project(tmp_path, monkeypatch, fresh_store):
    """A project directory whose store (already migrated) has two tracked runs with their data."""
    for key in ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_ID", "DVC_ROOT", "DVC_STAGE", tracking.PIPELINE_RUN_ENV):
        monkeypatch.delenv(key, raising=False)
    root = tmp_path / "project"
    root.mkdir()
    (root / "params.yaml").write_text("train: {}\n")
    fresh_store(root / tracking.DB_NAME)
    meta = {"dataset": "digits", "content_hash": "sha256:" + "5e1f" * 16, "sizes": {"train": 500, "val": 100}}
    for name in RUNS:
        with tracking.ModelRun(name, project_root=root) as run:
            run.log_datasets(meta, root / "splits", ("train", "val"))
            run.log_metrics({"train_seconds": 1.5})
    return root


@pytest.fixture
def ui_server(project, unmeasured):
    """`nhl ui`'s server (MLflow's code only, so outside coverage) on the project's store; yields its base
    URL once it answers /health."""
    port = _free_port()
    args = argparse.Namespace(port=port, host="127.0.0.1", project_root=project)
    server = subprocess.Popen(
        ui.ui_command(args),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        env={**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"},
    )
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_for_health(base, server)
        yield base
    finally:
        os.killpg(server.pid, signal.SIGKILL)  # the server, its uvicorn worker and job runner
        server.wait(timeout=30)


def _wait_for_health(base: str, server: subprocess.Popen, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while True:
        assert server.poll() is None, "mlflow ui exited early"
        try:
            if urllib.request.urlopen(f"{base}/health", timeout=2).read() == b"OK":
                return
        except OSError:
            pass
        assert time.monotonic() < deadline, "mlflow ui did not answer /health"
        time.sleep(0.5)


def test_the_page_nhl_ui_links_lists_the_runs_with_their_dataset(project, ui_server, browser, tmp_path):
    from selenium.webdriver.support.ui import WebDriverWait

    port = int(ui_server.rsplit(":", 1)[1])
    url = ui.browse_url(argparse.Namespace(host="127.0.0.1", port=port, project_root=project))
    assert url.startswith(f"{ui_server}/#/experiments/") and url.endswith("/runs?workflowType=machine_learning")
    browser.get(url)

    def body(driver) -> str:
        return driver.find_element("tag name", "body").text

    try:
        WebDriverWait(browser, 90).until(lambda d: all(name in body(d) for name in RUNS))
        WebDriverWait(browser, 30).until(lambda d: "digits/train (5e1f5e1f5e1f)" in body(d))
    finally:
        browser.save_screenshot(str(tmp_path / "mlflow-runs.png"))
    text = body(browser)
    # the runs table, not the GenAI overview: its columns are there, the traces overview is not
    assert "/runs" in browser.current_url and "Dataset" in text and "Duration" in text
    assert "Tokens per Trace" not in text
    assert text.count("digits/train (5e1f5e1f5e1f)") == len(RUNS)  # one per run, with the manifest digest
