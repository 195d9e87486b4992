"""`nhl schedule [--once]`: serve the Prefect retraining deployment, or run the flow now.

The flow and its deployment live in the project's `pipelines/flows.py`; the cron comes from the
`schedule` section of params.yaml. Prefect keeps its database in `<project>/.prefect` unless
PREFECT_HOME says otherwise.

`--once` needs no server: Prefect starts a temporary one for the run. Serving a schedule does:
Prefect's temporary server runs no scheduler, so its deployments would never fire. Unless
PREFECT_API_URL names a server, `nhl schedule` starts `prefect server start` on 127.0.0.1 (its UI
shows the runs), serves the deployment against it, and stops it on exit.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

FLOWS_FILE = Path("pipelines/flows.py")
# Prefect's default (20 s) for starting its temporary server times out about half the time on 2 cores.
PREFECT_DEFAULTS = {
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW": "ignore",
    "MLFLOW_DISABLE_TELEMETRY": "true",
}
SERVER_START_TIMEOUT_S = 120  # `prefect server start` answers after about 15 s on 2 idle cores
SERVER_STOP_TIMEOUT_S = 30
SERVER_LOG = "server.log"  # in PREFECT_HOME


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "schedule",
        help="serve the scheduled retraining flow (Prefect), or run it once",
        description="Serve the `retrain` deployment of pipelines/flows.py on the cron in params.yaml "
        "(`schedule: {cron, timezone}`) until interrupted, on the Prefect server at "
        "$PREFECT_API_URL or else on one started for it at 127.0.0.1:--port (its UI lists the "
        "runs); with --once, run the flow now, with no server, and print its summary. Each run "
        "reproduces the DVC pipeline (same cache and dvc.lock as `dvc repro`) and stops before "
        "training if the data validation fails.",
    )
    parser.add_argument("--once", action="store_true", help="run the flow now instead of serving the schedule")
    parser.add_argument(
        "--project-root",
        type=Path,
        default=None,
        help="project directory (default: the nearest parent with dvc.yaml/params.yaml)",
    )
    parser.add_argument(
        "--port",
        type=int,
        default=4200,
        help="port of the local Prefect server started to serve the schedule, when "
        "PREFECT_API_URL is unset (default: %(default)s)",
    )
    parser.set_defaults(func=run)


def prefect_environment(project: Path, environ: dict | os._Environ = os.environ) -> dict[str, str]:
    """The Prefect/MLflow settings this command needs that are not already set (PREFECT_HOME:
    `<project>/.prefect`, which git ignores)."""
    wanted = {"PREFECT_HOME": str(project / ".prefect"), **PREFECT_DEFAULTS}
    return {name: value for name, value in wanted.items() if name not in environ}


def load_flows(project: Path):
    """The project's `pipelines/flows.py` as a module (it is a script beside the stages, not a package)."""
    from prefect.utilities.importtools import load_script_as_module

    path = project / FLOWS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: is {project} an nhl project?")
    return load_script_as_module(str(path))


def _port_in_use(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


def _healthy(api_url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{api_url}/health", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


@contextlib.contextmanager
def local_prefect_server(port: int, log_path: Path, timeout: float = SERVER_START_TIMEOUT_S) -> Iterator[str]:
    """Run `prefect server start` on 127.0.0.1:`port` (output to `log_path`) for the block; yields its
    API URL once it answers. The server is stopped on exit, however the block ends."""
    from nhl.cli import CLIError

    if not 0 < port < 65536:
        raise ValueError(f"--port: expected 1-65535, got {port}")
    if _port_in_use(port):
        raise CLIError(
            f"127.0.0.1:{port} is already in use: pass --port, or set PREFECT_API_URL to the "
            f"Prefect server listening there"
        )
    log_path.parent.mkdir(parents=True, exist_ok=True)
    api_url = f"http://127.0.0.1:{port}/api"
    env = {key: value for key, value in os.environ.items() if key != "PREFECT_API_URL"}
    with open(log_path, "ab") as log:
        server = subprocess.Popen(
            [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + timeout
        while not _healthy(api_url):
            if server.poll() is not None:
                raise CLIError(f"the Prefect server exited with status {server.returncode}; see {log_path}")
            if time.monotonic() > deadline:
                raise CLIError(f"the Prefect server did not answer at {api_url} within {timeout:.0f} s; see {log_path}")
            time.sleep(0.5)
        yield api_url
    finally:
        _stop(server)


def _stop(server: subprocess.Popen) -> None:
    """SIGTERM the server's process group, then SIGKILL if it lingers."""
    if server.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(server.pid, signal.SIGTERM)
    try:
        server.wait(timeout=SERVER_STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGKILL)
        server.wait()


def serve_schedule(flows, project: Path, port: int) -> None:
    """Serve the project's deployment until interrupted, on PREFECT_API_URL or a local server."""
    from prefect import serve
    from prefect.settings import PREFECT_API_URL, temporary_settings

    os.chdir(project)  # the deployment's entrypoint (pipelines/flows.py) is taken relative to here
    if os.environ.get("PREFECT_API_URL"):
        serve(flows.deployment(project))
        return
    home = Path(os.environ.get("PREFECT_HOME", project / ".prefect"))
    with local_prefect_server(port, home / SERVER_LOG) as api_url:
        print(f"Prefect server at {api_url.removesuffix('/api')} (log: {home / SERVER_LOG})", flush=True)
        with temporary_settings(updates={PREFECT_API_URL: api_url}):
            serve(flows.deployment(project))  # blocks until interrupted


def run(args: argparse.Namespace) -> int:
    from nhl.tracking import find_project_root

    project = (args.project_root or find_project_root()).resolve()
    if not (project / "dvc.yaml").is_file():
        raise FileNotFoundError(f"{project / 'dvc.yaml'} not found: run inside the project or pass --project-root")
    os.environ.update(prefect_environment(project))  # before Prefect is imported: it reads them once
    flows = load_flows(project)
    if args.once:
        from nhl.orchestration import StageFailed, ValidationFailed

        try:
            summary = flows.retrain(project=str(project))
        except (StageFailed, ValidationFailed) as err:
            print(f"nhl schedule: retrain failed: {err}", file=sys.stderr)
            return 1
        ran = ", ".join(summary["stages_run"]) or "nothing (up to date)"
        print(f"retrain: ran {ran}; {len(summary['metrics'])} metrics files; report: {summary['report']}")
        return 0
    try:
        serve_schedule(flows, project, args.port)
    except KeyboardInterrupt:
        return 130
    return 0
