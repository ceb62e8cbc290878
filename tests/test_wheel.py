"""The installed package, not the checkout: the wheel ships every recipe, and `hyvl train --config
NAME` runs from an empty folder with only the installed files on the path (a process-boundary
test: it builds the wheel with pip, installs it with --target and trains 2 steps)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_wheel_ships_the_recipes_and_trains_from_an_empty_folder(tmp_path):
    from hyvl.data.demo import make_demo

    # Build from a copy so the checkout gets no build/ or egg-info; no build isolation, so no
    # download of setuptools (it is installed with the test extra).
    src = tmp_path / "src"
    shutil.copytree(REPO / "hyvl", src / "hyvl", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(REPO / name, src / name)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    wheels = tmp_path / "wheels"
    build = [*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", wheels, src]
    subprocess.run([str(a) for a in build], check=True, capture_output=True)
    (wheel,) = wheels.glob("hyvl-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    recipes = sorted(p.name for p in (REPO / "hyvl" / "configs").glob("*.yaml"))
    # every recipe of the checkout (their number grows with each model family added)
    assert {"clip_tiny.yaml", "meru_tiny.yaml", "hycoclip_tiny.yaml"} <= set(recipes)
    assert {f"hyvl/configs/{r}" for r in recipes} <= names
    # the explorer's page, script and style: --export inlines them, nothing comes from a CDN
    page = {f"hyvl/explore/static/{f}" for f in ("index.html", "explore.js", "explore.css")}
    assert page <= names

    site = tmp_path / "site"
    subprocess.run(
        [str(a) for a in [*pip, "install", "--no-deps", "--target", site, wheel]],
        check=True,
        capture_output=True,
    )
    data = make_demo(
        tmp_path / "data", train_samples=32, val_samples=8, zeroshot_per_class=1,
        retrieval_images=4, samples_per_shard=16,
    )  # fmt: skip
    empty = tmp_path / "empty"
    empty.mkdir()
    env = {**os.environ, "PYTHONPATH": str(site)}  # the installed files only, not the checkout
    overrides = [
        f"data.train_shards={data}/train/*.tar",
        "data.workers=0",
        "data.shuffle_buffer=16",
        "model.vision.image_size=32",
        "model.vision.depth=1",
        "model.text.layers=1",
        "train.batch_size=4",
        "train.max_steps=2",
        "train.warmup_steps=1",
        "train.checkpoint_every=2",
        "eval.zeroshot=",
        "eval.retrieval=",
    ]
    code = (
        "import hyvl, sys; from hyvl.cli.main import main; print(hyvl.__file__); sys.exit(main())"
    )
    run = subprocess.run(
        [sys.executable, "-c", code, "train", "--config", "hycoclip_tiny", "--output-dir", "out",
         *overrides],
        cwd=empty, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.splitlines()[0].startswith(str(site))  # the installed package ran
    records = [json.loads(x) for x in (empty / "out" / "metrics.jsonl").read_text().splitlines()]
    assert records[-1]["step"] == 2
    assert (empty / "out" / "export" / "README.md").is_file()
