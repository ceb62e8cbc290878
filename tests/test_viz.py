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
    assert disk["title"].startswith("hycoclip_tiny (") and "curvature c = 1" in disk["title"]
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


def _kind_embs(c):
    g = torch.Generator().manual_seed(2)
    return {
        "text": lorentz.exp_map0(torch.randn(20, 8, generator=g) * 0.4, c),
        "image": lorentz.exp_map0(torch.randn(30, 8, generator=g) * 1.2, c),
    }


def _rgb(colour):
    from matplotlib.colors import to_rgb

    return tuple(round(v, 3) for v in to_rgb(colour))


def _outside(fig, ax, legend):
    """The legend's box lies right of the disk's boundary circle, on the page."""
    fig.canvas.draw()
    disk = ax.patches[0].get_window_extent()
    return legend.get_window_extent().x0 >= disk.x1 - 1


def test_disk_picture_titles_rings_legend_and_kind_colours():
    from hyvl.viz import KIND_COLOURS, disk_figure, disk_radius_of

    c = 0.5
    fig, stats = disk_figure(_kind_embs(c), c, title="meru_tiny (ckpt), curvature c = 0.5")
    ax = fig.axes[0]
    assert "meru_tiny (ckpt)" in ax.get_title() and "curvature c = 0.5" in ax.get_title()
    # rings at round distances, each labelled, at the radius a point that far out is drawn at
    rings = {p.get_gid(): p.get_radius() for p in ax.patches if (p.get_gid() or "")[:5] == "ring-"}
    assert stats["rings"] and set(rings) == {f"ring-{d:g}" for d in stats["rings"]}
    labels = {t.get_text() for t in ax.texts}
    assert {f"d={d:g}" for d in stats["rings"]} <= labels
    one = lorentz.exp_map0(torch.tensor([[1.0, 0.0]]) * 1.0, c)  # a point at distance 1
    r_one = float(disk_coordinates({"x": torch.cat([one, -one])}, c)["x"][0].norm())
    assert abs(rings["ring-1"] - r_one) < 1e-5 and abs(r_one - disk_radius_of(1.0, c)) < 1e-6
    assert _outside(fig, ax, ax.get_legend())
    drawn = {col.get_label(): _rgb(col.get_facecolor()[0][:3]) for col in ax.collections}
    assert drawn["image"] == _rgb(KIND_COLOURS["image"])
    assert drawn["text"] == _rgb(KIND_COLOURS["text"])
    # the numbers say which radius they are: on the page, and the distance the rings measure
    d0 = float(lorentz.dist0(_kind_embs(c)["image"], c).mean())
    assert abs(stats["image"]["mean_dist0"] - d0) < 1e-5
    assert stats["image"]["mean_radius"] < stats["disk_radius"]


def test_norms_and_demo_pictures_share_the_kind_colours(tmp_path, monkeypatch):
    import matplotlib.pyplot as plt

    from hyvl.train.demo import plot
    from hyvl.viz import KIND_COLOURS, norms_figure

    fig, _ = norms_figure(_kind_embs(1.0), 1.0, title="hycoclip_tiny (x), curvature c = 1")
    ax = fig.axes[0]
    assert "hycoclip_tiny" in ax.get_title() and "curvature" in ax.get_title()
    assert _rgb(ax.patches[0].get_facecolor()[:3]) == _rgb(KIND_COLOURS["text"])
    fig.canvas.draw()
    assert ax.get_legend().get_window_extent().x0 >= ax.get_window_extent().x1
    # demo.png's histograms: the same colour per kind (they were matplotlib's default cycle)
    kept = []
    monkeypatch.setattr(plt, "close", kept.append)
    values = {k: {"values": [0.1 * i, 0.2 * i + 0.1]} for i, k in enumerate(KIND_COLOURS)}
    plot({"hycoclip": {"_distances": values}}, tmp_path / "demo.png")
    hist_ax = kept[0].axes[1]
    colours = [_rgb(p.get_facecolor()[:3]) for p in hist_ax.patches]
    for k, colour in KIND_COLOURS.items():
        assert _rgb(colour) in colours, k


def test_class_colours_follow_the_names_and_stay_distinct_past_ten():
    from hyvl.data.demo import CLASSES
    from hyvl.viz import OKABE_ITO, class_styles, disk_classes_figure

    styles = dict(zip(CLASSES, class_styles(CLASSES), strict=True))
    assert styles["red circle"]["colour"] == OKABE_ITO["vermillion"]  # it was drawn blue
    assert styles["blue circle"]["colour"] == OKABE_ITO["blue"]  # it was drawn orange
    assert styles["green square"]["colour"] == OKABE_ITO["bluish green"]
    assert len({(s["colour"], s["marker"]) for s in styles.values()}) == len(CLASSES) == 12
    generic = [f"class {i}" for i in range(30)]
    assert len({tuple(s.values()) for s in class_styles(generic)}) == 30
    assert {s["colour"] for s in class_styles(generic)} <= set(OKABE_ITO.values())
    # the picture draws each class in its style and names it next to its star
    c = 1.0
    g = torch.Generator().manual_seed(3)
    images = lorentz.exp_map0(torch.randn(24, 8, generator=g), c)
    labels = torch.arange(24) % 12
    texts = lorentz.exp_map0(torch.randn(12, 8, generator=g) * 0.3, c)
    fig, stats = disk_classes_figure(images, labels, texts, CLASSES, c, title="m (x), curvature")
    ax = fig.axes[0]
    red = CLASSES.index("red circle")
    (dots,) = [col for col in ax.collections if col.get_gid() == f"class-{red}"]
    assert _rgb(dots.get_facecolor()[0][:3]) == _rgb(OKABE_ITO["vermillion"])
    assert set(CLASSES) <= {t.get_text() for t in ax.texts}
    assert _outside(fig, ax, ax.get_legend())
    assert stats["classes"]["red circle"]["colour"] == OKABE_ITO["vermillion"]
