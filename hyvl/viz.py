"""Pictures of the space: distance-to-origin histograms and a 2-D Poincare-disk view.

Both embed a sample of grounded shards (images, captions, box crops, box texts) with a Lorentz
model, write a PNG (matplotlib, Agg) and return the numbers behind it for ``--json``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import torch

from hyvl import lorentz
from hyvl.errors import HyvlError

KINDS = ("box_text", "text", "box_image", "image")

# Okabe & Ito's palette (2008), which stays distinguishable under the common colour-vision
# deficiencies. One colour per kind, shared by every picture hyvl draws (viz, demo.png, the
# explorer): images blue, their box crops sky blue, texts vermillion, box texts orange.
OKABE_ITO = {
    "blue": "#0072B2",
    "vermillion": "#D55E00",
    "bluish green": "#009E73",
    "orange": "#E69F00",
    "reddish purple": "#CC79A7",
    "sky blue": "#56B4E9",
    "yellow": "#F0E442",
    "black": "#000000",
}
KIND_COLOURS = {
    "box_text": OKABE_ITO["orange"],
    "text": OKABE_ITO["vermillion"],
    "box_image": OKABE_ITO["sky blue"],
    "image": OKABE_ITO["blue"],
}
COLOURS = KIND_COLOURS  # the name earlier versions exported
# A class named after a colour ("red circle") is drawn in that colour's palette entry.
COLOUR_WORDS = {
    "red": "vermillion",
    "vermillion": "vermillion",
    "orange": "orange",
    "yellow": "yellow",
    "green": "bluish green",
    "blue": "blue",
    "cyan": "sky blue",
    "purple": "reddish purple",
    "violet": "reddish purple",
    "pink": "reddish purple",
    "magenta": "reddish purple",
    "black": "black",
}
# matplotlib marker codes; the explorer draws the same shapes on its canvas
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "h")


def class_styles(classnames: list[str]) -> list[dict[str, str]]:
    """One ``{"colour", "marker"}`` per class, no two classes alike up to 64 classes.

    A class whose name holds a colour word takes that colour (so "red circle" is red); the
    others take the palette in turn. Classes sharing a colour get different markers.
    """
    palette = list(OKABE_ITO)
    styles, used, turn = [], {}, 0
    for name in classnames:
        words = [w for w in name.lower().replace("_", " ").split() if w in COLOUR_WORDS]
        if words:
            colour = COLOUR_WORDS[words[0]]
        else:
            colour = palette[turn % len(palette)]
            turn += 1
        n = used.get(colour, 0)
        used[colour] = n + 1
        styles.append({"colour": OKABE_ITO[colour], "marker": MARKERS[n % len(MARKERS)]})
    return styles


def disk_radius_of(d, curv) -> float:
    """Euclidean radius in the Poincare disk of a point at hyperbolic distance ``d`` from the
    origin: ``tanh(sqrt(c) d / 2) / sqrt(c)``."""
    import math

    sc = float(curv) ** 0.5
    return math.tanh(sc * float(d) / 2) / sc


def ring_distances(max_d: float, most: int = 6) -> list[float]:
    """Round distances to the origin (1, 2, 3 ... or 0.5, 1 ... or 2, 4 ...) up to ``max_d``,
    at most ``most`` of them: where the rings of a disk picture are drawn."""
    import math

    max_d = max(float(max_d), 1e-3)
    for step in (0.1, 0.2, 0.25, 0.5, 1, 2, 5, 10, 20, 50):
        if max_d / step <= most:
            break
    n = max(1, math.floor(max_d / step + 1e-9))
    return [round(step * i, 6) for i in range(1, n + 1)]


def picture_title(model, checkpoint) -> str:
    """ "NAME (CHECKPOINT), curvature C": the title of every picture of a model's space."""
    curv = model.curv.item() if model.curv is not None else None
    name = getattr(model.config, "name", "model")
    c = f", curvature c = {curv:.3g}" if curv is not None else ""
    return f"{name} ({checkpoint}){c}"


def _disk_axes(ax, curv, max_d: float, title: str | None, subtitle: str):
    """The disk's boundary, labelled rings of constant distance to the origin, the origin."""
    import matplotlib.pyplot as plt

    radius = float(curv) ** -0.5
    ax.add_patch(plt.Circle((0, 0), radius, fill=False, color="black", lw=1))
    rings = ring_distances(max_d)
    for d in rings:
        r = disk_radius_of(d, curv)
        ax.add_patch(
            plt.Circle((0, 0), r, fill=False, color="0.6", lw=0.6, ls="--", gid=f"ring-{d:g}")
        )
        ax.text(0, r, f"d={d:g}", fontsize=6, color="0.35", ha="center", va="bottom")
    ax.scatter([0], [0], marker="+", color="black", s=60)
    ax.set_xlim(-radius * 1.05, radius * 1.05)
    ax.set_ylim(-radius * 1.05, radius * 1.05)
    ax.set_aspect("equal")
    ax.axis("off")
    full = f"{title}\n{subtitle}" if title else subtitle
    ax.set_title(full, fontsize=8)
    return rings


@torch.no_grad()
def embed_kinds(model, tokenizer, shards: str, max_samples: int = 512) -> dict[str, torch.Tensor]:
    """kind -> (N, D) embeddings of up to ``max_samples`` samples (boxes when present)."""
    from hyvl.data.pipeline import build_eval_loader

    if not model.space.hyperbolic:
        raise HyvlError(
            "these pictures need a Lorentz model (MERU / HyCoCLIP); CLIP embeds on a sphere"
        )
    out: dict[str, list] = {k: [] for k in KINDS}
    seen = 0
    model.eval()
    for boxes in (1, 0):  # boxes when the shards have them, else image-text only
        loader = build_eval_loader(
            shards,
            batch_size=64,
            image_size=model.image_size,
            tokenizer=tokenizer,
            boxes_per_sample=boxes,
        )
        for b in loader:
            emb = model(b.images, b.tokens, box_images=b.box_images, box_tokens=b.box_tokens)
            for k in KINDS:
                if getattr(emb, k) is not None:
                    out[k].append(getattr(emb, k))
            seen += len(b)
            if seen >= max_samples:
                break
        if seen:
            break
    return {k: torch.cat(v)[:max_samples] for k, v in out.items() if v}


def norm_stats(embs: dict[str, torch.Tensor], curv, bins: int = 30) -> dict[str, Any]:
    d0 = {k: lorentz.dist0(v, curv).float() for k, v in embs.items()}
    lo = min(float(v.min()) for v in d0.values())
    hi = max(float(v.max()) for v in d0.values())
    edges = torch.linspace(lo, hi + 1e-6, bins + 1)
    stats: dict[str, Any] = {"bin_edges": edges.tolist(), "curv": float(curv)}
    for k, v in d0.items():
        stats[k] = {
            "count": int(v.numel()),
            "mean": float(v.mean()),
            "std": float(v.std()) if v.numel() > 1 else 0.0,
            "min": float(v.min()),
            "max": float(v.max()),
            "hist": torch.histogram(v, edges).hist.long().tolist(),
        }
    return stats


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, out) -> None:
    fig.savefig(out, dpi=110, bbox_inches="tight")
    _pyplot().close(fig)


def norms_figure(embs, curv, title: str | None = None):
    """``(figure, stats)``: one histogram of distance to the origin per kind."""
    plt = _pyplot()
    stats = norm_stats(embs, curv)
    fig, ax = plt.subplots(figsize=(6.5, 3.5))
    for k in KINDS:
        if k in stats:
            values = lorentz.dist0(embs[k], curv).float().numpy()
            ax.hist(
                values,
                bins=stats["bin_edges"],
                alpha=0.6,
                label=k.replace("_", " "),
                color=KIND_COLOURS[k],
            )
    ax.set_xlabel("distance to the origin (hyperbolic)")
    ax.set_ylabel("count")
    sub = "distance to the origin by kind"
    ax.set_title(f"{title}\n{sub}" if title else sub, fontsize=8)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    return fig, stats


def plot_norms(embs, curv, out: str | Path, title: str | None = None) -> dict[str, Any]:
    fig, stats = norms_figure(embs, curv, title)
    _save(fig, out)
    return {"title": title, **stats}


def disk_coordinates(embs: dict[str, torch.Tensor], curv) -> dict[str, torch.Tensor]:
    """kind -> (N, 2) Poincare-disk points: tangent vectors projected on their top-2 principal
    directions, rescaled to keep each point's distance to the origin, then lifted to the
    2-D hyperboloid and mapped to the disk (radius 1/sqrt(c))."""
    tangents = {k: lorentz.log_map0(v.float(), curv) for k, v in embs.items()}
    allv = torch.cat(list(tangents.values()))
    _, _, v = torch.linalg.svd(allv - allv.mean(0), full_matrices=False)
    basis = v[:2].T  # (D, 2)
    out = {}
    for k, t in tangents.items():
        p = t @ basis
        p = p * (t.norm(dim=-1, keepdim=True) / p.norm(dim=-1, keepdim=True).clamp_min(1e-12))
        out[k] = lorentz.to_poincare(lorentz.exp_map0(p, curv), curv)
    return out


def disk_figure(embs, curv, title: str | None = None):
    """``(figure, stats)``: the kinds on the Poincare disk, rings at round distances."""
    plt = _pyplot()
    coords = disk_coordinates(embs, curv)
    d0 = {k: lorentz.dist0(v.float(), curv) for k, v in embs.items()}
    fig, ax = plt.subplots(figsize=(6.2, 5))
    rings = _disk_axes(
        ax,
        curv,
        max(float(v.max()) for v in d0.values()),
        title,
        "Poincare disk; dashed rings: hyperbolic distance d to the origin",
    )
    for k in KINDS:
        if k in coords:
            xy = coords[k].numpy()
            ax.scatter(
                xy[:, 0], xy[:, 1], s=6, alpha=0.6, label=k.replace("_", " "), color=KIND_COLOURS[k]
            )
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8, markerscale=2)
    stats = {
        "curv": float(curv),
        "disk_radius": float(curv) ** -0.5,
        "rings": rings,
        **{
            k: {
                "count": len(v),
                "mean_radius": float(v.norm(dim=-1).mean()),
                "mean_dist0": float(d0[k].mean()),
            }
            for k, v in coords.items()
        },
    }
    return fig, stats


def plot_disk(embs, curv, out: str | Path, title: str | None = None) -> dict[str, Any]:
    """The disk picture to ``out``; per kind its count, ``mean_radius`` (Euclidean, on the
    page) and ``mean_dist0`` (the hyperbolic distance the rings measure)."""
    fig, stats = disk_figure(embs, curv, title)
    _save(fig, out)
    return {"title": title, **stats}


IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp"}


@torch.no_grad()
def embed_image_folder(model, preprocess, tokenizer, root: str | Path, max_samples: int = 512):
    """An ImageFolder (one sub-folder of images per class) -> embeddings for a class picture.

    Takes up to ``max_samples`` images spread evenly over the classes. Class names come from
    ``root/classnames.txt`` (one per line, in sorted folder order) when present, ImageNet's
    names for WordNet-id folders, else the folder names (:mod:`hyvl.evaluation.classnames`).
    Returns ``(images (N, D), labels (N,), class_texts (C, D), classnames)``; the class texts
    are the class names themselves, embedded by the text tower.
    """
    from hyvl.errors import DataError
    from hyvl.evaluation.embed import embed_images, embed_texts

    if not model.space.hyperbolic:
        raise HyvlError("this picture needs a Lorentz model (MERU / HyCoCLIP)")
    root = Path(root)
    folders = sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
    if not folders:
        raise DataError(
            f"{root}: --color-by class needs an image folder with one sub-folder per class"
        )
    from hyvl.evaluation.classnames import folder_classnames

    names = folder_classnames(root, [f.name for f in folders])  # WordNet ids: their names
    if len(names) != len(folders):
        raise DataError(
            f"{root / 'classnames.txt'}: {len(names)} names for {len(folders)} class folders"
        )
    per_class = max(1, -(-max_samples // len(folders)))
    paths, labels = [], []
    for c, folder in enumerate(folders):
        files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        paths += files[:per_class]
        labels += [c] * len(files[:per_class])
    if not paths:
        raise DataError(f"{root}: no images in the class folders")

    from hyvl.images import BadImage, open_rgb

    pixels, kept, skipped = [], [], 0
    for path, label in zip(paths, labels, strict=True):
        try:  # every mode scaled to 8-bit RGB; a damaged or oversized image is left out
            pixels.append(preprocess(open_rgb(path)))
            kept.append(label)
        except BadImage as err:
            skipped += 1
            print(f"skipping {err} ({err.reason})", file=sys.stderr)
    if not pixels:
        raise DataError(f"{root}: no usable image in the class folders ({skipped} skipped)")
    labels = kept
    batches = [torch.stack(pixels[i : i + 64]) for i in range(0, len(pixels), 64)]
    model.eval()
    images, _ = embed_images(model, batches, len(batches))
    texts = embed_texts(model, tokenizer, names, desc="class names")
    return images, torch.tensor(labels), texts, names


def disk_classes_figure(images, labels, class_texts, classnames, curv, title=None):
    """``(figure, stats)``: images by class (:func:`class_styles`: colour and marker), each
    class name's text as a labelled star of the class's colour."""
    plt = _pyplot()
    coords = disk_coordinates({"image": images, "text": class_texts}, curv)
    d_img = lorentz.dist0(images.float(), curv)
    d_txt = lorentz.dist0(class_texts.float(), curv)
    fig, ax = plt.subplots(figsize=(7, 5.5))
    rings = _disk_axes(
        ax,
        curv,
        max(float(d_img.max()), float(d_txt.max())),
        title,
        "images by class; stars: class-name texts; dashed rings: distance d to the origin",
    )
    per_class = {}
    for c, (name, style) in enumerate(zip(classnames, class_styles(classnames), strict=True)):
        mask = labels == c
        xy = coords["image"][mask]
        ax.scatter(
            xy[:, 0], xy[:, 1], s=12, alpha=0.75, color=style["colour"], marker=style["marker"],
            edgecolors="none", label=name, gid=f"class-{c}",
        )  # fmt: skip
        t = coords["text"][c]
        ax.scatter(
            [t[0]], [t[1]], marker="*", s=140, color=style["colour"], edgecolors="black", lw=0.5,
            gid=f"class-text-{c}",
        )  # fmt: skip
        ax.annotate(name, (float(t[0]), float(t[1])), fontsize=6, xytext=(4, 3),
                    textcoords="offset points")  # fmt: skip
        per_class[name] = {
            "count": len(xy),
            "mean_radius": float(xy.norm(dim=-1).mean()) if len(xy) else None,
            "mean_dist0": float(d_img[mask].mean()) if len(xy) else None,
            "text_radius": float(t.norm()),
            "text_dist0": float(d_txt[c]),
            "colour": style["colour"],
            "marker": style["marker"],
        }
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=7, markerscale=1.5)
    radius = float(curv) ** -0.5
    return fig, {"curv": float(curv), "disk_radius": radius, "rings": rings, "classes": per_class}


def plot_disk_classes(images, labels, class_texts, classnames, curv, out: str | Path, title=None):
    """The class picture to ``out`` (:func:`disk_classes_figure`); returns its numbers."""
    fig, stats = disk_classes_figure(images, labels, class_texts, classnames, curv, title)
    _save(fig, out)
    return {"title": title, **stats}
