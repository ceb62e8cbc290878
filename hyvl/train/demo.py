"""`hyvl demo`: generate the demo data, train tiny CLIP / MERU / HyCoCLIP on 2 CPU cores,
evaluate zero-shot and retrieval, and show where each kind of embedding sits in the space.

The recipe is the packaged ``{clip,meru,hycoclip}_tiny`` one (``hyvl config show hycoclip_tiny``),
with the demo's steps, batch and data. Every model gets the same budget: same steps, batch,
learning rate and data.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

from hyvl.config import RunConfig, from_dict, load_run_config, to_dict
from hyvl.errors import ConfigError, DataError

KINDS = ("hycoclip", "meru", "clip")
# Order of the distance columns: the HyCoCLIP picture (box text nearest the origin, then
# text, box image, image) reads left to right.
DIST_KINDS = ("box_text", "text", "box_image", "image")


def demo_config(
    kind: str, data_dir: Path, *, steps: int, batch_size: int, seed: int = 0
) -> RunConfig:
    """The packaged ``{kind}_tiny`` recipe on the demo data in ``data_dir``, for ``steps`` steps.

    The recipe's warmup keeps its share of the run; the demo evaluates after training itself,
    so periodic evaluation is off and one checkpoint (the last) is kept.
    """
    recipe = to_dict(load_run_config(f"{kind}_tiny"))
    train = recipe["train"]
    warmup = round(train["warmup_steps"] * steps / train["max_steps"])
    objective = recipe["objective"]  # the entailment warm-up keeps its share of the run too
    objective["entail_warmup_steps"] = round(
        objective["entail_warmup_steps"] * steps / train["max_steps"]
    )
    recipe["data"]["train_shards"] = str(data_dir / "train" / "*.tar")
    train.update(
        max_steps=steps,
        batch_size=batch_size,
        warmup_steps=max(1, warmup),
        checkpoint_every=steps,
        keep_last=1,
        log_every=max(1, steps // 50),
        eval_every=0,
        seed=seed,
    )
    recipe["eval"].update(zeroshot="", retrieval="")
    return from_dict(RunConfig, recipe)


# What the demo reads from its data folder, beyond the training shards.
DEMO_NEEDS = ("val/*.tar", "zeroshot/classnames.txt", "retrieval/captions.json", "retrieval/images")


def ensure_demo_data(data_dir: Path, seed: int = 0, kind: str = "shapes") -> Path:
    """Make the demo dataset ``kind`` ("shapes" or "real") in ``data_dir`` unless it is there.

    Existing data of the other kind is an error rather than a silent mix-up, and so is a
    folder with training shards but without what evaluation reads (it would fail only at the
    first evaluation, after training).
    """
    from hyvl.data import demo, real
    from hyvl.data.writer import write_demo

    module = real if kind == "real" else demo
    names = data_dir / "zeroshot" / "classnames.txt"
    if (data_dir / "train").is_dir() and any((data_dir / "train").glob("*.tar")):
        if names.is_file() and names.read_text().split("\n")[:-1] != module.CLASSES:
            raise ConfigError(
                f"{data_dir} holds another demo's data (its classnames.txt is not the {kind} "
                "demo's): pick another --out or remove it"
            )
        missing = [need for need in DEMO_NEEDS if not any(data_dir.glob(need))]
        if missing:
            raise DataError(
                f"{data_dir} is incomplete (no {', '.join(missing)}): delete it to have the demo "
                f"data made again, or make it with `hyvl data demo --out {data_dir}`"
            )
        return data_dir
    make = real.make_real_demo if kind == "real" else demo.make_demo
    return write_demo(make, data_dir, seed=seed)


def run_one(kind: str, data_dir: Path, out_dir: Path, cfg: RunConfig) -> dict[str, Any]:
    """Train one tiny model (``cfg``: :func:`demo_config`) and evaluate it; returns the demo
    JSON for one model (docs/contract.md)."""
    import hyvl
    from hyvl.evaluation.retrieval import evaluate_retrieval
    from hyvl.evaluation.zeroshot import evaluate_zeroshot
    from hyvl.train.loop import train

    started = time.perf_counter()
    summary = train(cfg, out_dir)
    model, preprocess, tokenizer = hyvl.load(out_dir)
    model.eval()
    zeroshot = evaluate_zeroshot(model, preprocess, tokenizer, data_dir / "zeroshot")
    zeroshot["chance"] = 100.0 / zeroshot["num_classes"]
    retrieval = evaluate_retrieval(
        model,
        preprocess,
        tokenizer,
        data_dir / "retrieval" / "captions.json",
        data_dir / "retrieval" / "images",
    )
    distances = distances_to_origin(model, preprocess, tokenizer, data_dir)
    return {
        "zeroshot": zeroshot,
        "retrieval": retrieval,
        "seconds": round(time.perf_counter() - started, 1),
        "dist_to_origin": {
            k: distances[k]["mean"] for k in ("image", "text", "box_image", "box_text")
        },
        "health": summary["health"],
        "_distances": distances,  # per-sample values for the plot; dropped from the JSON
    }


def distances_to_origin(
    model: Any, preprocess: Any, tokenizer: Any, data_dir: Path
) -> dict[str, dict]:
    """Geodesic distance to the origin of every val image, caption, box crop and box text.

    Lorentz models: ``dist0`` on the hyperboloid. CLIP embeds on the unit sphere where every
    point is at distance 1 from the origin, so there is nothing to measure: values are None.
    """
    import torch

    from hyvl.data.pipeline import build_eval_loader

    kinds = {k: [] for k in ("image", "text", "box_image", "box_text")}
    if not model.space.hyperbolic:
        return {k: {"mean": None, "values": []} for k in kinds}
    loader = build_eval_loader(
        str(data_dir / "val" / "*.tar"),
        batch_size=64,
        image_size=model.image_size,
        tokenizer=tokenizer,
        boxes_per_sample=1,
    )
    with torch.no_grad():
        for batch in loader:
            emb = model(
                batch.images, batch.tokens, box_images=batch.box_images, box_tokens=batch.box_tokens
            )
            for name in kinds:
                value = getattr(emb, name)
                if value is not None:
                    kinds[name].append(model.space.dist0(value, emb.curv).float())
    out = {}
    for name, parts in kinds.items():
        values = torch.cat(parts) if parts else torch.empty(0)
        out[name] = {
            "mean": float(values.mean()) if len(values) else None,
            "values": values.tolist(),
        }
    return out


def check_previous_runs(out: Path, configs: dict[str, RunConfig]) -> None:
    """Before any model trains: refuse a ``DIR/MODEL`` that holds a demo run with other
    settings (or files hyvl did not make), naming the demo's flags that accept it."""
    from hyvl.config import load_yaml
    from hyvl.train import checkpoint as ckpt
    from hyvl.train.rundir import check_output_dir, config_changes

    for kind, cfg in configs.items():
        run_dir = out / kind
        saved = run_dir / "config.yaml"
        if not cfg.train.allow_config_change and saved.is_file() and ckpt.list_checkpoints(run_dir):
            changes = config_changes(load_yaml(saved), to_dict(cfg))
            if changes:
                listed = "; ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in changes.items())
                raise ConfigError(
                    f"{str(run_dir)!r} holds a demo run with other settings ({listed}): pass "
                    f"--overwrite to train it again from scratch (the old run is kept as "
                    f"{kind}.replaced-N), --allow-config-change to continue it with the new "
                    "settings, or use another --out"
                )
        try:
            check_output_dir(run_dir, cfg, overwrite=False)  # files hyvl did not make
        except ConfigError as err:
            raise ConfigError(
                f"{err} (hyvl demo --overwrite moves the folder aside as {kind}.replaced-N and "
                "trains afresh)"
            ) from None


def set_aside(run_dir: Path) -> Path | None:
    """Move a previous run out of the way as ``NAME.replaced-N`` (never deleted); returns it."""
    if not run_dir.exists():
        return None
    aside = next(
        run_dir.with_name(f"{run_dir.name}.replaced-{i}")
        for i in range(1, 10**6)
        if not run_dir.with_name(f"{run_dir.name}.replaced-{i}").exists()
    )
    run_dir.replace(aside)
    print(f"hyvl demo: previous {run_dir} kept as {aside.name}", file=sys.stderr)
    return aside


def run_demo(
    out: str | Path,
    models: list[str],
    *,
    steps: int,
    batch_size: int,
    seed: int = 0,
    data: str = "shapes",
    overwrite: bool = False,
    allow_config_change: bool = False,
) -> dict[str, Any]:
    """Demo data ``data`` ("shapes" or "real", made if missing), then train + evaluate each
    model. Returns name -> results.

    A model whose ``out/MODEL`` holds the run of the same settings resumes from it (nothing
    left to train: only evaluated). Other settings are refused before anything trains, unless
    ``overwrite`` (the previous run is moved to ``MODEL.replaced-N`` and trained from scratch)
    or ``allow_config_change`` (the run continues with the new settings, recorded in its
    metrics.jsonl, as ``train.allow_config_change``).
    """
    out = Path(out)
    data_dir = ensure_demo_data(out / "data", seed=seed, kind=data)
    configs = {}
    for kind in models:
        cfg = demo_config(kind, data_dir, steps=steps, batch_size=batch_size, seed=seed)
        if allow_config_change:
            tcfg = cfg.train.model_copy(update={"allow_config_change": True})
            cfg = cfg.model_copy(update={"train": tcfg})
        configs[kind] = cfg
    if not overwrite:
        check_previous_runs(out, configs)
    results = {}
    for kind in models:
        if overwrite:
            set_aside(out / kind)
        results[kind] = run_one(kind, data_dir, out / kind, configs[kind])
    return results


def table_rows(results: dict[str, dict]) -> list[dict[str, Any]]:
    rows = []
    for kind, res in results.items():
        zs, rt = res["zeroshot"], res["retrieval"]
        row: dict[str, Any] = {
            "model": kind,
            "zero-shot top1 %": zs["top1"],
            "chance %": zs["chance"],
            "I->T R@1": rt["image_to_text"]["R@1"],
            "T->I R@1": rt["text_to_image"]["R@1"],
        }
        for name in DIST_KINDS:
            value = res["dist_to_origin"][name]
            row[f"d0 {name.replace('_', ' ')}"] = "-" if value is None else value
        row["seconds"] = res["seconds"]
        rows.append(row)
    return rows


def family_rows(results: dict[str, dict]) -> list[dict[str, Any]]:
    """One row per model: zero-shot top-1 per family (the world's hierarchy.tsv), with
    ``(at chance)`` where the model is at chance on that family (see
    :func:`hyvl.evaluation.zeroshot.family_breakdown`)."""
    rows = []
    for kind, res in results.items():
        zs = res["zeroshot"]
        if not zs.get("per_family"):
            continue
        row: dict[str, Any] = {"model": kind}
        for family, top1 in zs["per_family"].items():
            chance = zs["family_stats"][family]["chance"]
            flag = " (at chance)" if family in zs.get("families_at_chance", []) else ""
            row[f"{family} (chance {chance:.0f})"] = f"{top1:.2f}{flag}"
        rows.append(row)
    return rows


def public_json(results: dict[str, dict]) -> dict[str, Any]:
    """The demo JSON (docs/contract.md): one object for one model, one per model name for several."""
    clean = {
        k: {key: v for key, v in r.items() if not key.startswith("_")} for k, r in results.items()
    }
    return next(iter(clean.values())) if len(clean) == 1 else clean


def plot(results: dict[str, dict], out: Path) -> Path | None:
    """Loss curves and distance-to-origin histograms, one column per model, to ``out``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from hyvl.viz import KIND_COLOURS

    kinds = list(results)
    fig, axes = plt.subplots(2, len(kinds), figsize=(4.5 * len(kinds), 7), squeeze=False)
    for col, kind in enumerate(kinds):
        metrics_path = out.parent / kind / "metrics.jsonl"
        records = (
            [json.loads(line) for line in metrics_path.read_text().splitlines()]
            if metrics_path.is_file()
            else []
        )
        records = [r for r in records if "loss" in r]  # not the notes (a config change)
        ax = axes[0][col]
        ax.plot([r["step"] for r in records], [r["loss"] for r in records])
        ax.set_title(f"{kind}: training loss")
        ax.set_xlabel("step")
        ax = axes[1][col]
        distances = results[kind]["_distances"]
        drawn = False
        for name in DIST_KINDS:
            values = distances[name]["values"]
            if values:
                ax.hist(
                    values,
                    bins=40,
                    alpha=0.55,
                    label=name.replace("_", " "),
                    color=KIND_COLOURS[name],  # the colours of hyvl viz and hyvl explore
                )
                drawn = True
        if drawn:
            ax.legend()
            ax.set_xlabel("distance to origin")
            ax.set_title(f"{kind}: embeddings by kind")
        else:
            ax.text(
                0.5,
                0.5,
                "unit sphere: every point at\ndistance 1 from the origin",
                ha="center",
                va="center",
            )
            ax.set_axis_off()
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
