"""Plot the training-health fields of one or more runs side by side.

    python tools/plot_health.py runs/a runs/b --labels before after --out health.png

One column per field: the contrastive loss over ln(B), the spread of the image and text
embeddings, their mean distance to the origin, and the share of entailment pairs inside
their cones (fields of ``metrics.jsonl``, see docs/learning.md); one line per run.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

PANELS = [
    ("loss_over_ln_b", "contrastive loss / ln B"),
    ("spread_image", "image spread"),
    ("spread_text", "text spread"),
    ("d0_image", "image distance to origin"),
    ("d0_text", "text distance to origin"),
    ("in_cone", "entailment pairs inside cones"),
]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("runs", nargs="+", help="training output directories (with metrics.jsonl)")
    p.add_argument("--labels", nargs="+", help="one label per run (default: directory names)")
    p.add_argument("--out", required=True, help="PNG to write")
    p.add_argument("--title", default="")
    args = p.parse_args()
    labels = args.labels or [Path(r).name for r in args.runs]
    if len(labels) != len(args.runs):
        p.error("--labels needs one label per run")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(PANELS), figsize=(3.2 * len(PANELS), 3.0))
    for run, label in zip(args.runs, labels, strict=True):
        records = [json.loads(line) for line in (Path(run) / "metrics.jsonl").open()]
        for ax, (key, title) in zip(axes, PANELS, strict=True):
            points = [(r["step"], r[key]) for r in records if r.get(key) is not None]
            if points:
                ax.plot(*zip(*points, strict=True), label=label)
            ax.set_title(title, fontsize=9)
            ax.set_xlabel("step", fontsize=8)
    axes[0].axhline(1.0, color="grey", lw=0.5, ls="--")
    axes[0].legend(fontsize=7)
    if args.title:
        fig.suptitle(args.title, fontsize=10)
    fig.tight_layout()
    fig.savefig(args.out, dpi=90)
    print(f"plot: {args.out}")


if __name__ == "__main__":
    main()
