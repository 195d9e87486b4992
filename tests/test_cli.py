"""The `nhl` entry point: help works and lists every registered subcommand."""

from __future__ import annotations

import subprocess
import sys

import pytest

from nhl.cli import COMMAND_MODULES, build_parser, main


def test_help_lists_every_subcommand(capsys):
    parser = build_parser()
    text = parser.format_help()
    for name in COMMAND_MODULES:
        assert name in text


def test_no_subcommand_prints_help_and_fails(capsys):
    assert main([]) == 1
    assert "usage: nhl" in capsys.readouterr().out


def test_console_help_runs_in_a_fresh_process():
    done = subprocess.run([sys.executable, "-m", "nhl.cli", "--help"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0
    assert "Nested Hash Layer" in done.stdout


def test_version_is_the_one_in_pyproject(capsys):
    import tomllib
    from pathlib import Path

    declared = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())["project"]["version"]
    with pytest.raises(SystemExit) as stop:
        main(["--version"])
    assert stop.value.code == 0
    assert capsys.readouterr().out.strip() == f"nhl {declared}"
