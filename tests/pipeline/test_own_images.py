"""Own images through DVC: changing one image in the user's folder reruns `fetch` and what
follows; a corrupt image stops the pipeline at `validate`, before any training."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from PIL import Image

pytestmark = pytest.mark.slow  # DVC repros of the tiny project (tens of seconds each)

RUNNING = re.compile(r"^Running stage '([^']+)'", re.MULTILINE)
CLASSES, PER_CLASS = ("ant", "bee", "cow"), 12


@pytest.fixture(scope="module")
def own_project(tiny_project, tmp_path_factory):
    """The tiny project on an imagefolder of 3 x 12 small PNGs, custom protocol, data stages run."""
    project = tiny_project.copy(tmp_path_factory.mktemp("own") / "project")
    rng = np.random.default_rng(0)
    for name in CLASSES:
        (project.root / "photos" / name).mkdir(parents=True)
        for i in range(PER_CLASS):
            pixels = rng.integers(0, 256, (10 + i, 12, 3), dtype=np.uint8)  # sizes differ
            Image.fromarray(pixels).save(project.root / "photos" / name / f"{i}.png")
    params = project.params()
    params["data"].update(
        dataset="imagefolder",
        root="photos",
        options={"size": 16},
        protocol="custom",
        query=2,
        train=6,
        val=2,
        per_class=True,
    )
    project.set_params(params)
    done = project.dvc("repro", "validate")
    assert RUNNING.findall(done.stdout) == ["scan", "fetch", "split", "validate"]
    return project


def test_unchanged_folder_skips_fetch(own_project):
    done = own_project.dvc("repro", "validate")
    assert RUNNING.findall(done.stdout) == ["scan"]


def test_touching_one_image_reruns_fetch_and_downstream(own_project, tmp_path):
    project = own_project.copy(tmp_path / "project")
    before = json.loads((project.root / "data/splits/manifest.json").read_text())["content_hash"]
    image = project.root / "photos/bee/3.png"
    pixels = np.asarray(Image.open(image)).copy()
    pixels[0, 0] ^= 1  # one pixel's bytes, same path, same size
    Image.fromarray(pixels).save(image)
    done = project.dvc("repro", "validate")
    assert RUNNING.findall(done.stdout) == ["scan", "fetch", "split", "validate"]
    after = json.loads((project.root / "data/splits/manifest.json").read_text())
    assert after["content_hash"] != before  # the manifest hash covers image content
    result = json.loads((project.root / "reports/validation/result.json").read_text())
    assert result["success"] and result["image_checks"]["decoded"] == 1  # the gate decoded only that image


def test_a_corrupt_image_stops_the_pipeline_at_validate(own_project, tmp_path):
    project = own_project.copy(tmp_path / "project")
    victim = project.root / "photos/cow/5.png"
    victim.write_bytes(victim.read_bytes()[:60])  # truncated: the header still parses at fetch
    done = project.dvc("repro", check=False)
    assert done.returncode != 0
    ran = RUNNING.findall(done.stdout)
    assert ran[-1] == "validate" and not any(s.startswith("train") for s in ran)
    assert "cow/5.png: cannot be decoded" in done.stdout + done.stderr
    assert not (project.root / "models").exists()
