"""Every command line of the README's ```bash blocks is checked: it parses with its own program's
parser, and the ones the tiny project can run are run there, as a user would paste them.

Only what the tiny project cannot provide is mapped: the README's query images are written where
the README names them, the registered model is named after the tiny project's dataset
(`MAPPED`), the claims report re-renders the repository's collected runs, and training runs at
the tiny project's epoch count (`SMALLEST`). A command that
cannot run in a test is listed in `NOT_RUN` with the reason; a README command that is in neither
place, or does not parse, fails the suite.
"""

from __future__ import annotations

import importlib.util
import re
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"

NOT_RUN = {
    "make run": "creates .venv and installs nhl before `dvc repro` of the full default pipeline; "
    "the pipeline itself runs below as `nhl run`",
    "make test": "runs this test suite",
    "make claims": "trains the 2,232 models of the claims plan (hours)",
    "make claims CLAIMS_ARGS=--dry-run": "make installs .venv first; the recipe line is parsed instead",
    "make claims CLAIMS_ARGS=--quick": "trains 70 models (about half an hour)",
    "make claims 'CLAIMS_ARGS=--tier three-hours'": "trains 372 models (about two hours)",
    "nhl ui": "starts the MLflow UI server and blocks until interrupted",
    "nhl schedule": "serves the cron deployment until interrupted (its --once form runs below)",
    "torchrun --nnodes 2 --node_rank '<0|1>' --nproc_per_node 4 --rdzv_backend c10d --rdzv_endpoint "
    "'<host:port>' pipelines/train.py --loss csq --variant nhl-full": "needs two machines",
    "cp params/cifar10.yaml params.yaml": "switches the project to the GPU protocol of the next command",
    "git commit -qam 'claims: the paper protocol'": "commits that switch",
    "python pipelines/claims.py --params params/claims.yaml --tier paper": (
        "needs a GPU, the CIFAR-10 batches and ResNet-50 weights, and hours"
    ),
    "make install": "installs into .venv, which `make test` has already done",
    ".venv/bin/python bench/make_images.py data/external/photos": (
        "writes 2,000 images; tests/pipeline/test_own_images.py runs the own-images pipeline "
        "on a small generated folder"
    ),
    "cp params/own-images.yaml params.yaml": "switches the project to own images (the command after it runs it)",
    "python bench/loss_zoo.py": "trains 28 models on mnist5k (a benchmark)",
    "nhl tune --loss dsh --grid lr=0.001,0.003 --grid margin=32,64": (
        "trains a grid of models; tests/commands/test_tune.py runs `nhl tune` on the digits split"
    ),
    "nhl serve --model models:/nhl-mnist5k-csq@champion": (
        "starts a server and blocks; tests/service/ start it and check the page and the API"
    ),
    "nhl serve --model models/csq/csq-nhl-full.pt --port 8001 --poll 0": "starts a server and blocks (as above)",
    "curl -s http://127.0.0.1:8000/health": (
        "asks a running `nhl serve`; tests/service/test_api.py makes the same requests"
    ),
    "curl -s http://127.0.0.1:8000/items": "asks a running `nhl serve` (as above)",
    "curl -s 'http://127.0.0.1:8000/search?item=<id>&bits=32&k=5'": "asks a running `nhl serve` (as above)",
    "curl -s -F file=@img.png -F bits=64 -F k=5 http://127.0.0.1:8000/search": "asks a running `nhl serve` (as above)",
    "curl -s http://127.0.0.1:8000/metrics '|' grep nhl_serve_requests": "asks a running `nhl serve` (as above)",
    "curl -s -X POST http://127.0.0.1:8000/reload": "asks a running `nhl serve` (as above)",
    "python pipelines/claims.py --params params/claims.yaml --executor dask --workers 2": (
        "trains the 2,232 models of the claims plan on a LocalCluster (hours); tests/pipeline/test_claims_fanout.py "
        "runs a 2-cell plan that way"
    ),
    "dask scheduler --port 8786": "starts a Dask scheduler and blocks (test_claims_fanout.py uses a LocalCluster)",
    "dask worker 'tcp://<scheduler-host>:8786' --nworkers 1 --nthreads 1": "needs a running scheduler; blocks",
    "python pipelines/claims.py --params params/claims.yaml --executor dask --scheduler "
    "'tcp://<scheduler-host>:8786' --git-remote '<git-url>' --dvc-remote '<dvc-url>' --workdir '<clone-path>'": (
        "needs a Dask cluster, shared remotes and hours"
    ),
    "mlflow models serve -m models:/nhl-mnist5k-csq@champion --env-manager local --port 5001": (
        "starts a server and blocks; tests/test_mlflow_serve.py starts it and compares its codes with `nhl encode`"
    ),
}
# Run before the others: they reproduce or read the pipeline (and `nhl schedule --once` registers the
# champion the registry commands use), while the others rewrite DVC-tracked outputs outside DVC
# (`nhl train` rewrites models/csq/csq-nhl-full.pt), which a later `dvc repro` would retrain.
FIRST = ("nhl run", "nhl schedule --once", "dvc metrics show", "dvc params diff", "dvc plots show --json")
# The README's names for things the tiny project (digits, not mnist5k) names otherwise.
MAPPED = {"models:/nhl-mnist5k-csq@champion": "models:/nhl-digits-csq@champion", "nhl-mnist5k-csq": "nhl-digits-csq"}
# Option values the tiny project runs at, smaller than the README's: the command takes the same path,
# and a longer run would only cost time (resuming and epoch counts are checked in tests/test_training.py).
SMALLEST = {"--epochs": "1"}
QUERY_IMAGES = ("path/to/image.png", "img.png")  # written into the project from its digits
# Placeholders the reader fills in, filled in for parsing.
PLACEHOLDERS = {
    "<0|1>": "0",
    "<host:port>": "node0:29500",
    "tcp://<scheduler-host>:8786": "tcp://10.0.0.1:8786",
    "<git-url>": "ssh://git@10.0.0.1/nhl.git",
    "<dvc-url>": "/mnt/shared/nhl-dvc",
    "<clone-path>": "/srv/nhl",
}
# What a run must print (a regular expression searched in its stdout), beyond exiting with 0.
PRINTS = {
    "nhl encode": r"encode: [\d,]+ codes of 16 bits",
    "nhl search": r"^query +rank +id +distance +labels$",
    "nhl evaluate": r'"bits": \{',
    "nhl validate": r"manifest validation passed",
    "nhl report": r"report: 4 of 4 models",
    "nhl audit": r"Chain complete",
    "nhl train": r"best epoch",
    "torchrun": r"train: csq-nhl-full: best epoch",
    "nhl run": r"Stage 'report' didn't change, skipping",  # only the always-run scan stage runs
    "nhl schedule": r"retrain: ran nothing \(up to date\)",
    "dvc metrics": r"metrics/csq/csq-nhl-full.json",
    # the collected runs are the first edition's until the second edition's plan runs: its report
    # leaves them out (other overrides) and counts the second edition's 2,232 planned models
    ".venv/bin/python pipelines/claims.py": r"claims: \d+ of 2232 models",
}


def readme_commands(text: str) -> list[str]:
    """The command lines of the ```bash blocks, in order: continuation lines joined, comments
    dropped, `a && b` split in two; each as `shlex.join` of its words."""
    commands = []
    for block in re.findall(r"^```bash\n(.*?)^```", text, re.S | re.M):
        for line in re.sub(r"\\\n\s*", " ", block).splitlines():
            words: list[str] = []
            for word in [*shlex.split(line, comments=True), "&&"]:
                if word != "&&":
                    words.append(word)
                elif words:
                    commands.append(shlex.join(words))
                    words = []
    return commands


COMMANDS = readme_commands(README.read_text(encoding="utf-8"))


# --------------------------------------------------------------------------- parsing, per program


def _fail_unless_parsed(parse: Callable[[], object], command: str, capsys) -> None:
    try:
        parse()
    except SystemExit as exit_:
        if exit_.code not in (0, None):  # 0: --help
            pytest.fail(f"README command does not parse: {command}\n{capsys.readouterr().err}")


def _script_parser(script: str) -> Callable[[list[str]], object]:
    """`parse_args` of a pipelines/ or bench/ script (it imports its neighbours, as when run)."""
    path = ROOT / script
    assert path.is_file() and path.parent.name in ("pipelines", "bench"), f"{script}: not a pipelines/ or bench/ script"
    sys.path.insert(0, str(path.parent))
    try:
        spec = importlib.util.spec_from_file_location(f"readme_{path.stem}", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(path.parent))
    return module.parse_args


def _parse_nhl(args: list[str], command: str, capsys) -> None:
    from nhl.cli import build_parser

    _fail_unless_parsed(lambda: build_parser().parse_args(args), command, capsys)


def _parse_dvc(args: list[str], command: str, capsys) -> None:
    from dvc.cli import DvcParserError, parse_args

    try:
        _fail_unless_parsed(lambda: parse_args(args), command, capsys)
    except DvcParserError:
        pytest.fail(f"README command does not parse: {command}\n{capsys.readouterr().err}")


def _parse_python(args: list[str], command: str, capsys) -> None:
    _fail_unless_parsed(lambda: _script_parser(args[0])(args[1:]), command, capsys)


def _parse_torchrun(args: list[str], command: str, capsys) -> None:
    from torch.distributed.run import get_args_parser

    parsed = []
    _fail_unless_parsed(lambda: parsed.append(get_args_parser().parse_args(args)), command, capsys)
    _parse_python([parsed[0].training_script, *parsed[0].training_script_args], command, capsys)


def _parse_make(args: list[str], command: str, capsys) -> None:
    """`make -n` knows the target; each stage script its recipe calls parses the recipe's arguments."""
    done = subprocess.run(["make", "-n", "-C", str(ROOT), *args], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, f"README command does not parse: {command}\n{done.stderr}"
    for line in done.stdout.splitlines():
        words = shlex.split(line)
        scripts = [i for i, word in enumerate(words) if re.fullmatch(r"pipelines/\w+\.py", word)]
        if scripts:
            _parse_python(words[scripts[0] :], f"{command} (recipe: {line})", capsys)


def _parse_curl(args: list[str], command: str, capsys) -> None:
    """The URL's path and method are routes of the `nhl serve` app (read from its decorators)."""
    routes = set(re.findall(r'@app\.(get|post)\("([^"]+)"', (ROOT / "nhl/service/app.py").read_text(encoding="utf-8")))
    args = args[: args.index("|")] if "|" in args else args
    url = next((word for word in args if word.startswith("http://")), None)
    assert url, f"README curl command without a URL: {command}"
    method = "post" if "-F" in args or ("-X" in args and args[args.index("-X") + 1] == "POST") else "get"
    path = re.sub(r"^http://[^/]+", "", url).split("?")[0]
    assert (method, path) in routes, f"README curl command asks for {method.upper()} {path}, not a route of nhl serve"


def _parse_mlflow(args: list[str], command: str, capsys) -> None:
    """Click parses the nested `mlflow <group> <command>` arguments without running the command."""
    import click
    from mlflow.cli import cli

    group, rest = cli, list(args)
    try:
        while isinstance(group, click.Group):
            context = group.make_context("mlflow", list(rest), resilient_parsing=False)
            name, group, rest = group.resolve_command(context, context.protected_args + context.args)
        group.make_context(name, rest)
    except click.ClickException as err:
        pytest.fail(f"README command does not parse: {command}\n{err.format_message()}")


def _parse_dask(args: list[str], command: str, capsys) -> None:
    """`dask scheduler|worker ...`: the click command of distributed's CLI parses them without starting."""
    import click
    from distributed.cli import dask_scheduler, dask_worker

    commands = {"scheduler": dask_scheduler.main, "worker": dask_worker.main}
    assert args and args[0] in commands, f"README dask command other than scheduler or worker: {command}"
    try:
        commands[args[0]].make_context(f"dask {args[0]}", list(args[1:]))
    except click.ClickException as err:
        pytest.fail(f"README command does not parse: {command}\n{err.format_message()}")


def _parse_cp(args: list[str], command: str, capsys) -> None:
    assert (ROOT / args[0]).is_file(), f"README command copies a file that does not exist: {command}"


PARSERS: dict[str, Callable[[list[str], str, object], None]] = {
    "nhl": _parse_nhl,
    "dvc": _parse_dvc,
    "python": _parse_python,
    ".venv/bin/python": _parse_python,
    "torchrun": _parse_torchrun,
    "make": _parse_make,
    "cp": _parse_cp,
    "curl": _parse_curl,
    "mlflow": _parse_mlflow,
    "git": lambda args, command, capsys: None,  # plain git
    "dask": _parse_dask,
}
# How each program is started in the test: this interpreter, so the project's own packages run.
LAUNCH = {
    "nhl": [sys.executable, "-m", "nhl.cli"],
    "dvc": [sys.executable, "-m", "dvc"],
    "python": [sys.executable],
    ".venv/bin/python": [sys.executable],
    "torchrun": [sys.executable, "-m", "torch.distributed.run"],
}


def test_the_readme_has_shell_commands_and_the_lists_name_only_readme_commands():
    assert (
        len(COMMANDS) >= 25
        and "nhl encode --model models/csq/csq-nhl-full.pt --manifest data/splits --out codes.npz" in COMMANDS
    )
    assert not set(NOT_RUN) - set(COMMANDS), "NOT_RUN names commands the README no longer has"
    assert not set(FIRST) - set(COMMANDS), "FIRST names commands the README no longer has"


@pytest.mark.parametrize("command", COMMANDS)
def test_readme_command_parses(command, capsys):
    program, *args = [PLACEHOLDERS.get(word, word) for word in shlex.split(command)]
    assert program in PARSERS, f"README command of an unknown program (add a parser here): {command}"
    PARSERS[program](args, command, capsys)


# --------------------------------------------------------------------------- running


def _mapped(command: str) -> list[str]:
    words = [MAPPED.get(word, word) for word in shlex.split(command)]
    return [SMALLEST.get(words[i - 1], word) if i else word for i, word in enumerate(words)]


@pytest.fixture
def readme_project(built_project, tmp_path):
    """A copy of the built tiny project holding the files the README's commands name."""
    import numpy as np
    from PIL import Image

    project = built_project.copy(tmp_path / "project")
    images = np.load(project.root / "data/raw/digits/images.npy")
    for n, name in enumerate(QUERY_IMAGES):
        (project.root / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(images[n]).save(project.root / name)
    # the claims report re-renders the repository's collected runs
    shutil.copytree(ROOT / "params", project.root / "params", dirs_exist_ok=True)
    shutil.copytree(ROOT / "reports/claims/runs", project.root / "reports/claims/runs")
    return project


@pytest.mark.slow
@pytest.mark.timeout(1800)  # on top of the project's build; about 17 process starts (minutes on 2 busy cores)
def test_readme_commands_run_in_the_tiny_project(readme_project):
    """Every README command not in NOT_RUN exits 0 there and prints what it should."""
    runnable = [c for c in COMMANDS if c not in NOT_RUN]
    order = [c for c in FIRST if c in runnable] + [c for c in runnable if c not in FIRST]
    env = {key: value for key, value in readme_project.env.items() if key != "PREFECT_API_URL"}
    env["PREFECT_HOME"] = str(readme_project.root / ".prefect")
    failures = []
    for command in order:
        program, *args = _mapped(command)
        assert program in LAUNCH, f"no way to run {program!r}: list the command in NOT_RUN or add it to LAUNCH"
        start = time.monotonic()
        done = subprocess.run(
            [*LAUNCH[program], *args], cwd=readme_project.root, env=env, capture_output=True, text=True, timeout=600
        )
        print(f"{time.monotonic() - start:6.1f} s  exit {done.returncode}  {command}")  # shown with -s or on failure
        expected = next((p for prefix, p in PRINTS.items() if command.startswith(prefix)), None)
        if done.returncode != 0 or (expected and not re.search(expected, done.stdout, re.M)):
            failures.append(
                f"$ {command}\nexit {done.returncode}, expected output {expected!r}\n"
                f"{done.stdout[-1500:]}\n{done.stderr[-1500:]}"
            )
    assert not failures, "README commands that failed in the tiny project:\n\n" + "\n\n".join(failures)
    assert (readme_project.root / "codes.npz").is_file()
