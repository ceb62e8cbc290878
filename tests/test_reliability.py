"""Bad input and output safety on the command line (issue 14, cases 5, 6 and 7): one-line
errors with exit 2 instead of tracebacks, refusal to clobber, skips counted, and values that
used to come out silently wrong."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from PIL import Image

import hyvl


def run_cli(*args):
    """``hyvl ARGS`` in this process; a traceback would escape as an exception here."""
    from hyvl.cli.main import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in args])
    return SimpleNamespace(returncode=code, stdout=out.getvalue(), stderr=err.getvalue())


def assert_one_line_error(res, *words):
    assert res.returncode == 2, (res.stdout, res.stderr)
    lines = res.stderr.strip().splitlines()
    assert lines and "Traceback" not in res.stderr, res.stderr
    assert lines[-1].startswith("hyvl ") and "error:" in lines[-1], res.stderr
    for word in words:
        assert word in res.stderr, (word, res.stderr)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    """A small MERU export (one block per tower) and a texts file."""
    root = tmp_path_factory.mktemp("rel")
    torch.manual_seed(0)
    small = {"text": {"layers": 1}, "vision": {"depth": 1}}
    hyvl.save(hyvl.create_model("meru_tiny", **small), root / "meru")
    (root / "texts.txt").write_text("red\ngreen\nblue\nshape\n")
    return root


# ------------------------------------------------------------------------------ case 5


def test_index_build_refuses_to_replace_an_index_without_overwrite(ckpt, tmp_path):
    build = ("index", "build", "--checkpoint", ckpt / "meru", "--texts", ckpt / "texts.txt")
    assert run_cli(*build, "--out", tmp_path / "idx").returncode == 0
    before = (tmp_path / "idx" / "items.jsonl").read_text()
    assert_one_line_error(run_cli(*build, "--out", tmp_path / "idx"), "--overwrite")
    assert (tmp_path / "idx" / "items.jsonl").read_text() == before
    assert run_cli(*build, "--out", tmp_path / "idx", "--append").returncode == 0
    assert len((tmp_path / "idx" / "items.jsonl").read_text().splitlines()) == 8
    assert run_cli(*build, "--out", tmp_path / "idx", "--overwrite").returncode == 0
    assert (tmp_path / "idx" / "items.jsonl").read_text() == before
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "mine.txt").write_text("x")
    assert_one_line_error(run_cli(*build, "--out", tmp_path / "notes"), "not empty", "mine.txt")
    (tmp_path / "file").write_text("x")
    assert_one_line_error(run_cli(*build, "--out", tmp_path / "file"), "not a directory")


def test_data_demo_refuses_a_foreign_directory_and_keeps_its_files(tmp_path):
    from hyvl.data.demo import make_demo
    from hyvl.data.writer import write_demo

    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "holiday.jpg").write_bytes(b"precious")
    res = run_cli("data", "demo", "--out", tmp_path / "photos", "--train-samples", "4")
    assert_one_line_error(res, "holiday.jpg", "--overwrite")
    assert sorted(p.name for p in (tmp_path / "photos").iterdir()) == ["holiday.jpg"]
    (tmp_path / "f").write_text("x")
    assert_one_line_error(run_cli("data", "demo", "--out", tmp_path / "f"), "not a directory")
    sizes = dict(train_samples=4, val_samples=2, zeroshot_per_class=1, retrieval_images=2)
    write_demo(make_demo, tmp_path / "photos", overwrite=True, **sizes)
    assert (tmp_path / "photos" / "holiday.jpg").read_bytes() == b"precious"
    assert (tmp_path / "photos" / "zeroshot" / "classnames.txt").is_file()
    write_demo(make_demo, tmp_path / "demo", **sizes)
    write_demo(make_demo, tmp_path / "demo", seed=1, **sizes)  # demo data: replaced freely


def photos(root: Path, n: int) -> Path:
    (root / "img").mkdir(parents=True)
    lines = []
    for i in range(n):
        Image.new("RGB", (24, 24), (i * 20, 0, 0)).save(root / "img" / f"{i}.png")
        lines.append(json.dumps({"image": f"{i}.png", "caption": f"photo {i}"}))
    (root / "caps.jsonl").write_text("\n".join(lines) + "\n")
    return root


def test_make_shards_removes_the_stale_shards_of_its_previous_run(tmp_path):
    photos(tmp_path, 8)
    make = ("data", "make-shards", "--images", tmp_path / "img", "--captions",
            tmp_path / "caps.jsonl", "--out", tmp_path / "s")  # fmt: skip
    assert run_cli(*make, "--samples-per-shard", "1").returncode == 0
    (tmp_path / "s" / "README.txt").write_text("not ours")
    assert run_cli(*make, "--samples-per-shard", "2").returncode == 0
    manifest = json.loads((tmp_path / "s" / "shard-manifest.json").read_text())
    assert sorted(p.name for p in (tmp_path / "s").glob("*.tar")) == sorted(
        s["shard"] for s in manifest["shards"]
    )
    assert len(manifest["shards"]) == 4 and (tmp_path / "s" / "README.txt").is_file()
    stats = run_cli("data", "stats", f"{tmp_path / 's'}/*.tar", "--json", tmp_path / "st.json")
    assert json.loads((tmp_path / "st.json").read_text())["shards"] == 4, stats.stderr


def test_make_shards_with_the_wrong_image_root_is_an_error(tmp_path):
    photos(tmp_path, 3)
    (tmp_path / "elsewhere").mkdir()
    res = run_cli("data", "make-shards", "--images", tmp_path / "elsewhere", "--captions",
                  tmp_path / "caps.jsonl", "--out", tmp_path / "s")  # fmt: skip
    assert_one_line_error(res, "none of the 3 images exists", str(tmp_path / "elsewhere" / "0.png"))
    assert not (tmp_path / "s").exists()
