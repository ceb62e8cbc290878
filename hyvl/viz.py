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
COLOURS = {
    "box_text": "tab:orange",
    "text": "tab:red",
    "box_image": "tab:cyan",
    "image": "tab:blue",
}


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


def plot_norms(embs, curv, out: str | Path) -> dict[str, Any]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stats = norm_stats(embs, curv)
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for k in KINDS:
        if k in stats:
            values = lorentz.dist0(embs[k], curv).float().numpy()
            ax.hist(
                values,
                bins=stats["bin_edges"],
                alpha=0.55,
                label=k.replace("_", " "),
                color=COLOURS[k],
            )
    ax.set_xlabel("distance to the origin")
    ax.set_ylabel("count")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return stats


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


def plot_disk(embs, curv, out: str | Path) -> dict[str, Any]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    coords = disk_coordinates(embs, curv)
    radius = float(curv) ** -0.5
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.add_patch(plt.Circle((0, 0), radius, fill=False, color="black", lw=1))
    for k in KINDS:
        if k in coords:
            xy = coords[k].numpy()
            ax.scatter(
                xy[:, 0], xy[:, 1], s=6, alpha=0.6, label=k.replace("_", " "), color=COLOURS[k]
            )
    ax.scatter([0], [0], marker="+", color="black", s=60)
    ax.set_xlim(-radius * 1.05, radius * 1.05)
    ax.set_ylim(-radius * 1.05, radius * 1.05)
    ax.set_aspect("equal")
    ax.axis("off")
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return {
        "curv": float(curv),
        "disk_radius": radius,
        **{
            k: {"count": len(v), "mean_radius": float(v.norm(dim=-1).mean())}
            for k, v in coords.items()
        },
    }


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


def plot_disk_classes(images, labels, class_texts, classnames, curv, out: str | Path):
    """Poincare-disk picture: images coloured by class, each class name as a star."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    coords = disk_coordinates({"image": images, "text": class_texts}, curv)
    radius = float(curv) ** -0.5
    cmap = plt.get_cmap("tab20")
    fig, ax = plt.subplots(figsize=(6, 6))
    ax.add_patch(plt.Circle((0, 0), radius, fill=False, color="black", lw=1))
    per_class = {}
    for c, name in enumerate(classnames):
        colour = cmap(c % 20)
        xy = coords["image"][labels == c]
        ax.scatter(xy[:, 0], xy[:, 1], s=8, alpha=0.6, color=colour, label=name)
        t = coords["text"][c]
        ax.scatter([t[0]], [t[1]], marker="*", s=140, color=colour, edgecolors="black", lw=0.5)
        per_class[name] = {
            "count": len(xy),
            "mean_radius": float(xy.norm(dim=-1).mean()) if len(xy) else None,
            "text_radius": float(t.norm()),
        }
    ax.scatter([0], [0], marker="+", color="black", s=60)
    ax.set_xlim(-radius * 1.05, radius * 1.05)
    ax.set_ylim(-radius * 1.05, radius * 1.05)
    ax.set_aspect("equal")
    ax.axis("off")
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=7, markerscale=2)
    ax.set_title("images by class; stars: class-name texts", fontsize=9)
    fig.tight_layout()
    fig.savefig(out, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return {"curv": float(curv), "disk_radius": radius, "classes": per_class}
