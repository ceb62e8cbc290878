"""Per-class and per-family zero-shot accuracy of trained runs on a demo world's zero-shot folder.

One mean over a mixed world (digits and textures) can hide a family the model never learned;
this prints top-1 per family (from the world's ``hierarchy.tsv``: each class's parent) and the
worst class, for each run, and writes ``{run: {"top1", "per_family", "per_class"}}`` with
``--json``.

    python tools/family_accuracy.py --world runs/real/data runs/real-recipe/*/export
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def families(world: Path, classnames: list[str]) -> dict[str, str]:
    """class -> family (its parent in hierarchy.tsv), ``all`` where none is listed."""
    parent = {}
    tsv = world / "hierarchy.tsv"
    if tsv.exists():
        for line in tsv.read_text().splitlines():
            parts = line.split("\t")
            if len(parts) == 2:
                parent[parts[1]] = parts[0]
    return {c: parent.get(c, "all") for c in classnames}


def evaluate(run: str, world: Path) -> dict:
    import torch

    import hyvl
    from hyvl.evaluation.zeroshot import evaluate_zeroshot

    torch.set_num_threads(1)
    model, preprocess, tokenizer = hyvl.load(run)
    res = evaluate_zeroshot(
        model, preprocess, tokenizer, world / "zeroshot", return_predictions=True
    )
    pred, labels, names = res["_predictions"], res["_labels"], res["_classnames"]
    fam = families(world, names)
    per_class = {}
    for i, name in enumerate(names):
        mask = labels == i
        if mask.any():
            per_class[name] = 100.0 * float((pred[mask] == i).float().mean())
    per_family: dict[str, list] = {}
    for name, acc in per_class.items():
        per_family.setdefault(fam[name], []).append(acc)
    return {
        "top1": res["top1"],
        "chance": 100.0 / len(names),
        "num_predicted_classes": res["num_predicted_classes"],
        "per_family": {f: sum(v) / len(v) for f, v in per_family.items()},
        "per_class": per_class,
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--world", required=True, type=Path, help="demo world folder (zeroshot/)")
    p.add_argument("runs", nargs="+", help="run exports or checkpoints (hyvl.load paths)")
    p.add_argument("--json")
    args = p.parse_args()
    out = {}
    for run in args.runs:
        r = evaluate(run, args.world)
        out[run] = r
        fams = "  ".join(
            f"{f}: {a:.1f} ({a / r['chance']:.1f}x)" for f, a in r["per_family"].items()
        )
        print(f"{run}: top1 {r['top1']:.1f} ({r['top1'] / r['chance']:.1f}x chance)  {fams}")
        print("   " + " ".join(f"{c.split()[-1]}={a:.0f}" for c, a in r["per_class"].items()))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
