"""Shared fixtures, each built once per test session: a tiny seeded digits split, an empty MLflow
store to copy, and a headless Chromium for the browser tests."""

from __future__ import annotations

import os
from dataclasses import dataclass

import pytest

# `make test` runs the suite in 2 pytest-xdist workers on 2 cores: each worker (and every stage
# process it starts, which inherits the variable) keeps torch to one thread, since two torch jobs
# that each spin 2 OpenMP threads on 2 cores slow each other 4-10x (../shared/notes/stack.md).
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ["OMP_NUM_THREADS"] = "1"
    os.environ["MKL_NUM_THREADS"] = "1"
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")


@dataclass
class DigitsSplits:
    """The digits protocol's datasets (10 query, 50 train, 10 val per class; database the rest)."""

    frame: object
    images: object
    num_classes: int
    train: object
    val: object
    query: object
    database: object


@pytest.fixture(scope="session")
def digits_splits() -> DigitsSplits:
    from nhl.data.dataset import load_split
    from nhl.data.sources import load
    from nhl.data.splits import get_protocol, make_split

    source = load("digits")
    frame, meta = make_split(source, get_protocol("digits"), seed=0)
    parts = {
        name: load_split(frame, name, source=source.images, num_classes=source.num_classes)
        for name in ("train", "val", "query", "database")
    }
    return DigitsSplits(frame=frame, images=source.images, num_classes=source.num_classes, **parts)


@pytest.fixture(scope="session")
def digits_manifest_dir(tmp_path_factory) -> os.PathLike:
    """A digits split on disk, as the fetch and split stages write it: raw/ and splits/ directories."""
    from nhl.data.manifest import write_manifest
    from nhl.data.raw import save_source
    from nhl.data.sources import load
    from nhl.data.splits import get_protocol, make_split

    root = tmp_path_factory.mktemp("digits")
    source = load("digits")
    save_source(source, root / "raw")
    frame, meta = make_split(source, get_protocol("digits"), seed=0)
    meta["raw_dir"] = str(root / "raw")
    write_manifest(root / "splits", frame, meta)
    return root / "splits"


@pytest.fixture(scope="session")
def fresh_store(tmp_path_factory):
    """`make(path) -> uri`: an empty MLflow sqlite store at `path`, copied from one migrated once per
    session (creating a store runs MLflow's migrations: about 4 s)."""
    import shutil

    template = tmp_path_factory.getbasetemp() / "mlflow-empty.db"

    def make(path) -> str:
        if not template.exists():
            import mlflow

            staging = template.with_name("mlflow-empty.staging.db")
            mlflow.MlflowClient(f"sqlite:///{staging}").search_experiments()
            os.replace(staging, template)
        shutil.copyfile(template, path)
        return f"sqlite:///{path}"

    return make


CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"


@pytest.fixture(scope="session")
def browser():
    """One headless Chromium (Debian's chromium and chromium-driver) for every browser test of the session:
    starting one costs seconds. Each test opens its own page with `browser.get`."""
    import shutil

    webdriver = pytest.importorskip("selenium.webdriver")
    if not (shutil.which(CHROMIUM) and shutil.which(CHROMEDRIVER)):
        pytest.skip("chromium / chromedriver not installed (apt-get install -y chromium chromium-driver)")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1600,1000"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


# Set by coverage's `patch = ["subprocess"]` (pyproject.toml): every Python process started with it in
# its environment runs under coverage's tracer.
COVERAGE_SUBPROCESS_ENV = "COVERAGE_PROCESS_CONFIG"


@pytest.fixture
def unmeasured(monkeypatch) -> None:
    """Processes the test starts run without coverage: for servers that run none of nhl/ or pipelines/
    (Prefect's, MLflow's), whose start-up the tracer only slows down and whose files coverage omits."""
    monkeypatch.delenv(COVERAGE_SUBPROCESS_ENV, raising=False)
