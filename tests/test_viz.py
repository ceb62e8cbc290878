"""Pictures of the space: `hyvl viz norms|disk` write a PNG plus the numbers behind it."""

import contextlib
import io
import json

import torch

import hyvl
from hyvl import lorentz
from hyvl.viz import disk_coordinates, norm_stats


def run_cli(*args):
    from hyvl.cli.main import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in args])
    return code, out.getvalue(), err.getvalue()


def test_disk_keeps_each_points_distance_to_the_origin():
    c = 0.5
    g = torch.Generator().manual_seed(0)
    embs = {
        "text": lorentz.exp_map0(torch.randn(20, 16, generator=g) * 0.5, c),
        "image": lorentz.exp_map0(torch.randn(30, 16, generator=g) * 2.0, c),
    }
    coords = disk_coordinates(embs, c)
    for kind, x in embs.items():
        r = coords[kind].norm(dim=-1)
        assert (r < c**-0.5).all()
        # Poincare ball radius r <-> hyperbolic distance 2/sqrt(c) artanh(sqrt(c) r)
        d_disk = 2 / c**0.5 * torch.atanh(c**0.5 * r)
        assert torch.allclose(d_disk, lorentz.dist0(x, c), rtol=1e-3, atol=1e-3)


def test_norm_histograms_count_every_point():
    c = 1.0
    g = torch.Generator().manual_seed(1)
    embs = {
        "text": lorentz.exp_map0(torch.randn(25, 8, generator=g) * 0.3, c),
        "image": lorentz.exp_map0(torch.randn(40, 8, generator=g) * 1.5, c),
    }
    stats = norm_stats(embs, c, bins=10)
    assert sum(stats["text"]["hist"]) == 25 and sum(stats["image"]["hist"]) == 40
    assert stats["text"]["mean"] < stats["image"]["mean"]
    assert abs(stats["image"]["mean"] - float(lorentz.dist0(embs["image"], c).mean())) < 1e-5


def test_cli_viz_writes_png_and_numbers(tmp_path):
    from hyvl.data.demo import make_demo

    make_demo(
        tmp_path / "demo", train_samples=8, val_samples=40, zeroshot_per_class=1, retrieval_images=2
    )
    torch.manual_seed(0)
    hyvl.save(hyvl.create_model("hycoclip_tiny"), tmp_path / "ckpt")
    for kind in ("norms", "disk"):
        code, _, err = run_cli(
            "viz",
            kind,
            "--checkpoint",
            tmp_path / "ckpt",
            "--data",
            tmp_path / "demo" / "val" / "*.tar",
            "--out",
            tmp_path / f"{kind}.png",
            "--json",
            tmp_path / f"{kind}.json",
        )
        assert code == 0, err
        assert (tmp_path / f"{kind}.png").read_bytes()[:4] == b"\x89PNG"
        stats = json.loads((tmp_path / f"{kind}.json").read_text())
        assert stats["image"]["count"] == 40 and stats["box_text"]["count"] == 40
    norms = json.loads((tmp_path / "norms.json").read_text())
    assert sum(norms["text"]["hist"]) == 40
    disk = json.loads((tmp_path / "disk.json").read_text())
    assert all(disk[k]["mean_radius"] < disk["disk_radius"] for k in ("image", "text"))
    # colour by class: an image folder, one sub-folder per class, class names as stars
    code, out, err = run_cli(
        "viz", "disk", "--color-by", "class", "--checkpoint", tmp_path / "ckpt",
        "--data", tmp_path / "demo" / "zeroshot", "--out", tmp_path / "classes.png",
        "--json", tmp_path / "classes.json",
    )  # fmt: skip
    assert code == 0, err
    assert (tmp_path / "classes.png").read_bytes()[:4] == b"\x89PNG"
    classes = json.loads((tmp_path / "classes.json").read_text())["classes"]
    names = (tmp_path / "demo" / "zeroshot" / "classnames.txt").read_text().split("\n")
    assert list(classes) == [n for n in names if n] and "red circle" in out
    assert all(c["count"] == 1 and c["text_radius"] < 1.0 for c in classes.values())
    # shards are no class folder: a clear error, no traceback
    code, _, err = run_cli(
        "viz", "disk", "--color-by", "class", "--checkpoint", tmp_path / "ckpt",
        "--data", tmp_path / "demo" / "val" / "*.tar", "--out", tmp_path / "x.png",
    )  # fmt: skip
    assert code == 2 and "one sub-folder per class" in err
