"""Layering: the codes, metrics and index layers load no tracking or registry code.

Checked in a fresh interpreter (this test process may already hold mlflow), via `sys.modules`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_codes_metrics_and_index_import_neither_mlflow_nor_the_registry():
    script = (
        "import json, sys\nimport nhl.codes, nhl.metrics, nhl.index\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] == 'mlflow' "
        "or m.startswith('nhl.registry') or m.startswith('nhl.tracking') or m == 'nhl.serving')))"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", script], check=False, capture_output=True, text=True, env=env, cwd=ROOT, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []


def test_the_serving_module_resolves_files_without_loading_mlflow(tmp_path):
    """`nhl.serving.resolve_model` on a model file stays off MLflow (registry names import it lazily)."""
    script = (
        "import sys, torch\nfrom nhl.models.hasher import Hasher, HasherSpec, save_hasher\n"
        "from nhl.serving import resolve_model\n"
        f"p = {str(tmp_path / 'm.pt')!r}\n"
        "save_hasher(Hasher(HasherSpec('smallcnn', 1, (8, 16), {'width': 8})), p, extra={'model_id': 'tiny'})\n"
        "model, info = resolve_model(p)\n"
        "assert info['model_id'] == 'tiny' and info['lengths'] == [8, 16], info\n"
        "print(any(m.split('.')[0] == 'mlflow' for m in sys.modules))"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", script], check=False, capture_output=True, text=True, env=env, cwd=ROOT, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "False"


def test_no_lazy_import_of_a_higher_layer_either():
    """Imports inside functions count too: the module's source names no tracking, registry or serving module."""
    import ast

    higher = ("mlflow", "nhl.registry", "nhl.tracking", "nhl.serving", "nhl.commands")
    for name in ("codes", "metrics", "index"):
        tree = ast.parse((ROOT / "nhl" / f"{name}.py").read_text())
        imported = [alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names]
        imported += [node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)]
        bad = [module for module in imported if module.startswith(higher)]
        assert bad == [], f"nhl/{name}.py imports {bad}"
