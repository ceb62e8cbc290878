"""What does fine-tuning a pretrained CLIP into hyperbolic space buy over training from scratch?

    python tools/finetune_evidence.py                     # real -> mixed, 100 steps a run
    python tools/finetune_evidence.py --json evidence.json
    python tools/finetune_evidence.py --quick             # a smoke run of seconds

Nothing is downloaded: the pretrained model is made here. ``clip_tiny`` trains on one
real-image world (``--source``, default ``real``: digits and textures, ``hyvl data demo --kind
real --world real``; clip_tiny learns the textures there, not the digits) for
``--pretrain-steps``; its run is the ``model.init`` of MERU and HyCoCLIP runs on
ANOTHER world (``--target``, default ``mixed``: digits, textures and photos), each fine-tuned
three ways with the packaged ``*_tiny_ft`` recipes for ``--steps``:

- ``full``: every weight trains (towers at lr 5e-4, the lift at 1e-3);
- ``lora``: rank-8 LoRA adapters in both towers (peft) and the lift;
- ``lift``: the towers frozen (``train.freeze=towers``), only projections, alphas, curvature
  and logit scale train;

and compared with ``scratch``: the packaged ``*_tiny`` recipe from random weights at the same
step budget. For each run: zero-shot top-1 on the target world's held-out images (overall and
per family of its hierarchy), image<->text retrieval R@1 (mean of both directions), zero-shot
on the SOURCE world (how much of the CLIP's own zero-shot survives: the share of the CLIP's
top-1 kept), wall time, trainable parameters and the training process's peak memory (peak
RSS above the RSS of the process with its libraries imported, before the model is built;
``resource.getrusage``). Each run trains in a
process of its own (one at a time) so that its peak is its own; runs are reused when their
``evidence.json`` is there (``--out``, default ``runs/finetune_evidence``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from hyvl.cli.common import print_table, write_json  # noqa: E402

MODES = ("scratch", "full", "lora", "lift")
FAMILIES = ("meru", "hycoclip")
MODE_KEYS = {
    "scratch": {},
    "full": {},
    "lora": {"lora": {"rank": 8, "alpha": 8}},
    "lift": {"freeze": "towers"},
}
QUICK = {"train_samples": 16, "val_samples": 2, "zeroshot_per_class": 1, "retrieval_images": 2}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--source", default="real", help="world the CLIP is pretrained on")
    p.add_argument("--target", default="mixed", help="world fine-tuned on (another one)")
    p.add_argument("--steps", type=int, default=100, help="steps of every fine-tune / scratch run")
    p.add_argument("--pretrain-steps", type=int, default=400, help="steps of the CLIP run")
    p.add_argument("--families", default=",".join(FAMILIES), help="meru,hycoclip")
    p.add_argument("--modes", default=",".join(MODES), help="scratch,full,lora,lift")
    p.add_argument("--out", default="runs/finetune_evidence")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="a few images and 2 steps a run")
    p.add_argument("--json", default=None, help="write the results here")
    p.add_argument("--no-train", action="store_true", help="report the finished runs only")
    args = p.parse_args(argv)
    if args.source == args.target:
        p.error("--source and --target must be different worlds")
    for mode in args.modes.split(","):
        if mode not in MODES:
            p.error(f"--modes: unknown mode {mode!r} (known: {', '.join(MODES)})")
    return args


def _rss_kib() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024


def _recipe(name: str, data: Path, steps: int, batch: int | None, seed: int) -> dict:
    """The packaged recipe ``name`` on ``data`` at ``steps`` (its warm-ups keep their share)."""
    from hyvl.config import load_run_config, to_dict

    recipe = to_dict(load_run_config(name))
    train, objective = recipe["train"], recipe["objective"]
    own = train["max_steps"]
    if steps != own:
        train["warmup_steps"] = max(1, round(train["warmup_steps"] * steps / own))
        if objective.get("entail_warmup_steps"):
            objective["entail_warmup_steps"] = round(objective["entail_warmup_steps"] * steps / own)
    recipe["data"]["train_shards"] = str(data / "train" / "*.tar")
    train.update(max_steps=steps, checkpoint_every=steps, keep_last=1, eval_every=0, seed=seed)
    train["log_every"] = min(train["log_every"], max(1, steps // 10))
    if batch:
        train["batch_size"] = batch
    recipe["eval"].update(zeroshot="", retrieval="")
    return recipe


def _train_child(recipe: dict, run_dir: str, queue) -> None:
    """In a process of its own: train, and report the summary, wall time and peak memory."""
    import resource

    import torch

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    import open_clip  # noqa: F401  (what train imports, so the baseline holds the libraries)
    import timm  # noqa: F401

    from hyvl.config import RunConfig, from_dict
    from hyvl.train.loop import train

    with contextlib.suppress(ImportError):
        import peft  # noqa: F401
    base = _rss_kib()
    started = time.perf_counter()
    try:
        summary = train(from_dict(RunConfig, recipe), Path(run_dir))
    except Exception as err:  # a failed run is a row of the table, not the end of the tool
        queue.put(
            {"error": f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"}
        )
        return
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    runtime = json.loads((Path(run_dir) / ".hyvl-run").read_text()).get("runtime", {})
    queue.put(
        {
            "seconds": round(time.perf_counter() - started, 1),
            "peak_mib": round((peak - base) / 1024, 1),
            "trainable_params": runtime.get("trainable_params"),
            "total_params": runtime.get("total_params"),
            "health": summary.get("health"),
            "init": runtime.get("init"),
        }
    )


def train_run(recipe: dict, run_dir: Path) -> dict[str, Any]:
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    child = ctx.Process(target=_train_child, args=(recipe, str(run_dir), queue))
    child.start()
    try:
        result = queue.get()
    finally:
        child.join()
    return result


def evaluate(run_dir: Path, target: Path, source: Path) -> dict[str, Any]:
    import hyvl
    from hyvl.evaluation.retrieval import evaluate_retrieval
    from hyvl.evaluation.zeroshot import evaluate_zeroshot

    model, preprocess, tokenizer = hyvl.load(run_dir)
    zs = evaluate_zeroshot(model, preprocess, tokenizer, target / "zeroshot")
    own = evaluate_zeroshot(model, preprocess, tokenizer, source / "zeroshot")
    rt = evaluate_retrieval(model, preprocess, tokenizer, target / "retrieval" / "captions.json")
    r1 = (rt["image_to_text"]["R@1"] + rt["text_to_image"]["R@1"]) / 2
    return {
        "zeroshot": round(zs["top1"], 2),
        "chance": round(100.0 / zs["num_classes"], 2),
        "per_family": {f: round(v, 2) for f, v in zs.get("per_family", {}).items()},
        "retrieval_r1": round(r1, 2),
        "source_zeroshot": round(own["top1"], 2),
    }


def one(
    name: str, recipe: dict, run_dir: Path, target: Path, source: Path, train: bool = True
) -> dict[str, Any]:
    done = run_dir / "evidence.json"
    if done.is_file() and json.loads(done.read_text()).get("recipe") == recipe:
        return {**json.loads(done.read_text()), "reused": True}
    if not train:
        return {"name": name, "error": "not run"}
    if run_dir.exists():
        import shutil

        shutil.rmtree(run_dir)  # another configuration, or a run that did not finish
    result: dict[str, Any] = {"name": name, "recipe": recipe, **train_run(recipe, run_dir)}
    if "error" not in result:
        result.update(evaluate(run_dir, target, source))
        write_json(done, result)
    return result


def rows(results: dict[str, dict], families: list[str]) -> list[dict[str, Any]]:
    clip = results["clip"]
    out = []
    for key, r in results.items():
        if r.get("error") == "not run":
            continue
        if "error" in r:
            out.append({"run": key, "zero-shot": f"failed: {r['error']}"})
            continue
        row = {
            "run": key,
            "zero-shot": r["zeroshot"],
            **{f: r["per_family"].get(f, "") for f in families},
            "R@1": r["retrieval_r1"],
            "source zero-shot": r["source_zeroshot"],
            "kept": f"{100 * r['source_zeroshot'] / max(clip['source_zeroshot'], 1e-9):.0f}%",
            "trainable": f"{r['trainable_params']:,}" if r.get("trainable_params") else "",
            "seconds": r["seconds"],
            "peak MiB": r["peak_mib"],
        }
        out.append(row)
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    from learning_sweep import FULL, world_data

    from hyvl.progress import progress_bar

    out = Path(args.out)
    sizes = QUICK if args.quick else FULL
    steps, pre = (2, 2) if args.quick else (args.steps, args.pretrain_steps)
    batch = 4 if args.quick else None
    source = world_data(out, args.source, args.seed, sizes)
    target = world_data(out, args.target, args.seed, sizes)
    families = [f for f in args.families.split(",") if f]
    modes = [m for m in args.modes.split(",") if m]
    clip_dir = out / "runs" / f"clip_{args.source}"
    jobs = [("clip", _recipe("clip_tiny", source, pre, batch, args.seed), clip_dir)]
    for family in families:
        for mode in modes:
            if mode == "scratch":
                recipe = _recipe(f"{family}_tiny", target, steps, batch, args.seed)
            else:
                recipe = _recipe(f"{family}_tiny_ft", target, steps, batch, args.seed)
                recipe["model"]["init"] = str(clip_dir)
                recipe["train"].update(MODE_KEYS[mode])
            jobs.append((f"{family} {mode}", recipe, out / "runs" / f"{family}_{mode}"))
    results: dict[str, dict] = {}
    with progress_bar(total=len(jobs), desc="fine-tuning runs", unit="run") as bar:
        for name, recipe, run_dir in jobs:
            bar.set_postfix_str(name)
            results[name] = one(name, recipe, run_dir, target, source, not args.no_train)
            bar.update(1)
            if name == "clip" and "error" in results[name]:
                print(f"finetune_evidence: the CLIP run failed: {results[name]['error']}")
                return 1
    fams = sorted({f for r in results.values() for f in r.get("per_family", {})})
    print(
        f"\nCLIP pretrained on {args.source} for {pre} steps, then {steps} steps a run on "
        f"{args.target} (zero-shot and R@1 in percent on {args.target}'s held-out images; "
        f"chance {results['clip'].get('chance')}%; source zero-shot on {args.source}, "
        "kept = share of the CLIP's)"
    )
    print_table(rows(results, fams))
    missing = [k for k, v in results.items() if v.get("error") == "not run"]
    if missing:
        print(f"not run: {', '.join(missing)}")
    if args.json:
        payload = {
            "source": args.source,
            "target": args.target,
            "steps": steps,
            "pretrain_steps": pre,
            "runs": {k: {x: y for x, y in v.items() if x != "recipe"} for k, v in results.items()},
        }
        write_json(Path(args.json), payload)
    return 0


if __name__ == "__main__":
    sys.exit(main())
