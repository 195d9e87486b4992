"""`nhl ui`: the MLflow UI on the project's tracking store (the same one the pipeline logs to)."""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
from pathlib import Path

STOP_TIMEOUT_S = 30  # MLflow's server (uvicorn + job runner) takes about 20 s to stop on SIGINT here


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "ui",
        help="browse the MLflow runs of this project",
        description="Start `mlflow ui` on the project's store: $MLFLOW_TRACKING_URI, else "
        "sqlite:///<project root>/mlruns.db with artifacts in <project root>/mlartifacts. "
        "Ctrl-C stops it.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind (default: %(default)s)")
    parser.add_argument("--port", type=int, default=5000, help="port to listen on (default: %(default)s)")
    parser.add_argument(
        "--project-root",
        type=Path,
        default=None,
        help="project directory (default: $DVC_ROOT or the nearest parent with dvc.yaml/params.yaml)",
    )
    parser.set_defaults(func=run)


def ui_command(args: argparse.Namespace) -> list[str]:
    """The `mlflow ui` command line for the project's local store."""
    from nhl.tracking import artifact_root, tracking_uri

    if not 0 < args.port < 65536:
        raise ValueError(f"--port: expected 1-65535, got {args.port}")
    artifacts = str(artifact_root(args.project_root))
    return [
        sys.executable,
        "-m",
        "mlflow",
        "ui",
        "--backend-store-uri",
        tracking_uri(args.project_root),
        "--default-artifact-root",
        artifacts,
        "--artifacts-destination",
        artifacts,
        "--host",
        args.host,
        "--port",
        str(args.port),
        "--workers",
        "1",
    ]


# MLflow 3.17's UI decides what an experiment opens on from its `workflowType` (the URL parameter,
# else the browser's last choice, else "genai": the traces overview); the experiment's
# `mlflow.experimentKind` tag, which nhl sets too, does not change that. This parameter opens the
# runs table, with its Dataset and Duration columns.
WORKFLOW = "workflowType=machine_learning"


def browse_url(args: argparse.Namespace) -> str:
    """The page to open: the runs of the project's experiment (the experiment list before any run)."""
    base = f"http://{args.host}:{args.port}"
    from nhl.tracking import DB_NAME, DEFAULT_EXPERIMENT, find_project_root

    root = Path(args.project_root) if args.project_root is not None else find_project_root()
    if not (root / DB_NAME).is_file() or os.environ.get("MLFLOW_TRACKING_URI"):
        return f"{base}/#/experiments?{WORKFLOW}"
    try:
        import mlflow

        from nhl.tracking import tracking_uri

        found = mlflow.MlflowClient(tracking_uri(root)).get_experiment_by_name(DEFAULT_EXPERIMENT)
    except Exception:  # noqa: BLE001 - only the link is at stake
        found = None
    if found is None:
        return f"{base}/#/experiments?{WORKFLOW}"
    return f"{base}/#/experiments/{found.experiment_id}/runs?{WORKFLOW}"


def run(args: argparse.Namespace) -> int:
    from nhl.tracking import is_remote, tracking_uri

    uri = tracking_uri(args.project_root)
    if is_remote(uri):
        print(f"MLFLOW_TRACKING_URI is a tracking server: open {uri} in a browser")
        return 0
    command = ui_command(args)
    env = {"MLFLOW_DISABLE_TELEMETRY": "true", **os.environ}
    print(
        f"MLflow UI for {uri} at http://{args.host}:{args.port} (Ctrl-C stops it); the runs: {browse_url(args)}",
        flush=True,
    )
    server = subprocess.Popen(command, env=env)
    try:  # pass a stop request on to the server (only possible from the main thread)
        previous = signal.signal(signal.SIGTERM, lambda signum, frame: server.terminate())
    except ValueError:
        previous = None
    try:
        return server.wait()
    except KeyboardInterrupt:
        # A terminal's Ctrl-C reaches the whole process group; forward it in case only we got it.
        if server.poll() is None:
            server.send_signal(signal.SIGINT)
        try:
            server.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            server.terminate()
            server.wait()
        return 130
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
