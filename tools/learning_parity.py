"""hyvl's CLIP trainer beside open_clip's own trainer (open_clip_train), on the same everything.

    python tools/learning_parity.py --out runs/parity --json parity.json      # 3 seeds, 400 steps
    python tools/learning_parity.py --quick --out runs/parity_quick           # smoke test

Both trainers train the ``clip_tiny`` recipe (``--recipe``) on the shards of the real-image world
(``hyvl data demo --kind real``, written to OUT/data unless ``--data`` names one): hyvl through
``hyvl train``, open_clip through ``open_clip_train.main`` in its own process. The open_clip
model is described by an open_clip model config (OUT/open_clip_config/hyvl-clip_tiny.json,
registered with ``open_clip.add_model_config``) whose image tower is the same timm ViT hyvl
builds (registered in timm under ``hyvl_clip_tiny_vit``) and whose text tower is open_clip's
text transformer with the recipe's shape: the two models have the same parameter shapes. The
recipe's AdamW (lr, betas, eps, weight decay on matrices only), warmup + cosine to 0, batch,
steps, gradient clipping, precision, random-resized-crop scale, pixel mean/std and seed are
passed to both. Each final model is scored by the same code: open_clip_train's checkpoint is
read with ``torch.load(weights_only=True)`` and converted into a hyvl model (its weights, not a
wrapper), then hyvl's zero-shot classifier runs on the world's zero-shot folder; per-family
accuracy uses the world's hierarchy.tsv (handwritten digits vs textures).

What cannot be made equal is printed with the results (``DIFFERENCES``): the data loaders
(shuffle buffers, the order of samples, open_clip's shard resampler), the random streams
(initial weights and crops differ at the same seed), open_clip's projection init, and its
in-place logit-scale clamp. ``--json F`` writes
``{"hyvl": {"top1", ...}, "open_clip": {"top1", ...}, "seeds", ...}``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

REPO = Path(__file__).resolve().parents[1]
OPENCLIP_NAME = "hyvl-clip_tiny"  # the open_clip model name (its config file's stem)
TIMM_NAME = "hyvl_clip_tiny_vit"  # the timm entry open_clip's TimmModel builds
TRAINERS = ("hyvl", "open_clip")
CURVE_WINDOW = 50  # a curve point at step s is the mean of the logged losses in (s - 50, s]

DIFFERENCES = [
    "data loader: hyvl's seeded shard order and a shuffle buffer of data.shuffle_buffer samples; "
    "open_clip_train's ResampledShards2 (--dataset-resampled) and its 5000-sample buffer. Same "
    "shards, same number of samples per step, different order.",
    "random streams: the same seed number, consumed by different code, so initial weights and "
    "the random crops differ between the trainers (seed noise, measured over the seeds); "
    "--same-init starts both from open_clip's initial weights at each seed.",
    "visual projection init (without --same-init): hyvl draws N(0, width^-0.5) (MERU's), "
    "open_clip's TimmModel head is nn.Linear's default (uniform, std (3 width)^-0.5). The text "
    "projection is N(0, width^-0.5) in both; the towers are the same timm ViT and open_clip "
    "text transformer, initialised by the same code.",
    "logit scale: open_clip clamps the parameter in place to [0, ln 100] after each step; "
    "hyvl clamps where the loss uses it (max 100). Neither run comes near 100 (the curves "
    "table prints the final scale).",
    "loss: the same symmetric cross-entropy of one process; open_clip's gather across "
    "processes does not enter a one-process run.",
    "open_clip_train 3.3.0's webdataset reader fails on webdataset 1.x's end-of-shard marker; "
    "the tool's open_clip process passes eof_value=None to webdataset's tar expander (the "
    "marker left out), open_clip_train's code is otherwise run unchanged.",
    "tokenizer: the same (open_clip's SimpleTokenizer, the recipe's context length); "
    "augmentation: the same RandomResizedCrop (recipe scale, default ratio, bicubic).",
]


# ------------------------------------------------------------------------------------------
# the open_clip model config and the timm tower it names
# ------------------------------------------------------------------------------------------


def openclip_model_config(model_cfg) -> dict[str, Any]:
    """An open_clip model config (the JSON of ``open_clip/model_configs``) for a hyvl CLIP.

    The image tower is named by ``timm_model_name`` (``TIMM_NAME``, see :func:`register_timm`):
    open_clip's TimmModel does not pass patch size, width, depth or heads to timm, so the
    registered entry builds the tower from hyvl's config. ``timm_pool=""`` keeps the ViT's own
    class-token pooling (hyvl's), ``timm_proj="linear"`` without bias is hyvl's projection.
    """
    if model_cfg.geometry != "euclidean":
        raise SystemExit(f"model {model_cfg.name!r} is not a CLIP (geometry {model_cfg.geometry})")
    text = model_cfg.text
    if text.kind != "openclip":
        raise SystemExit(f"model {model_cfg.name!r}: only the CLIP text transformer is compared")
    return {
        "embed_dim": model_cfg.embed_dim,
        "quick_gelu": bool(text.quick_gelu),
        "vision_cfg": {
            "image_size": model_cfg.vision.image_size,
            "timm_model_name": TIMM_NAME,
            "timm_model_pretrained": False,
            "timm_pool": "",
            "timm_proj": "linear",
            "timm_proj_bias": False,
        },
        "text_cfg": {
            "context_length": text.context_length,
            "vocab_size": text.vocab_size,
            "width": text.width,
            "heads": text.heads,
            "layers": text.layers,
            "mlp_ratio": text.mlp_ratio,
        },
    }


def register_timm(vision_cfg) -> None:
    """Register hyvl's image tower for ``vision_cfg`` in timm under ``TIMM_NAME``."""
    import timm.models

    from hyvl.models.towers import ImageTower

    def build(pretrained: bool = False, **kwargs):
        if pretrained:
            raise SystemExit(f"{TIMM_NAME}: no pretrained weights (trained from scratch)")
        # timm.create_model hands every entry its pretrained-config bookkeeping; anything else
        # (open_clip's drop_path_rate / patch_drop_rate) would change the tower: refused.
        extra = set(kwargs) - {"pretrained_cfg", "pretrained_cfg_overlay", "cache_dir"}
        if extra:
            raise SystemExit(f"{TIMM_NAME}: unexpected timm arguments {sorted(extra)}")
        return ImageTower(vision_cfg).vit

    build.__name__ = build.__qualname__ = TIMM_NAME
    if TIMM_NAME in timm.models._registry._model_entrypoints:  # registered by this process
        return
    timm.models.register_model(build)


def write_openclip_config(model_cfg, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{OPENCLIP_NAME}.json"
    path.write_text(json.dumps(openclip_model_config(model_cfg), indent=2) + "\n")
    (folder / "hyvl_model.json").write_text(json.dumps(_model_dict(model_cfg), indent=2) + "\n")
    return path


def _model_dict(model_cfg) -> dict:
    from hyvl.config import to_dict

    return to_dict(model_cfg)


def load_openclip_registry(folder: Path):
    """In this process: register the timm tower and the model config written to ``folder``;
    returns the hyvl ModelConfig they describe."""
    import open_clip

    from hyvl.config import ModelConfig, from_dict

    model_cfg = from_dict(ModelConfig, json.loads((folder / "hyvl_model.json").read_text()))
    register_timm(model_cfg.vision)
    open_clip.add_model_config(folder / f"{OPENCLIP_NAME}.json")
    return model_cfg


def openclip_to_hyvl_model(checkpoint: Path, model_cfg):
    """open_clip_train's checkpoint (weights only) as a hyvl model with the same weights."""
    from hyvl.models.init import initialise
    from hyvl.models.registry import create_model

    model = create_model(model_cfg)
    initialise(model, str(checkpoint))  # torch.load(weights_only=True) inside
    return model.eval()


# ------------------------------------------------------------------------------------------
# the two training runs
# ------------------------------------------------------------------------------------------


def recipe_settings(recipe: str, steps: int | None, batch: int | None, warmup: int | None):
    """The run config both trainers get (the recipe, with the budget overrides)."""
    from hyvl.config import load_run_config
    from hyvl.models.registry import resolve_model_config

    overrides = []
    if steps is not None:
        overrides.append(f"train.max_steps={steps}")
    if batch is not None:
        overrides.append(f"train.batch_size={batch}")
    if warmup is not None:
        overrides.append(f"train.warmup_steps={warmup}")
    cfg = load_run_config(recipe, overrides)
    if cfg.objective.kind != "clip":
        raise SystemExit(f"--recipe {recipe}: objective {cfg.objective.kind!r}, not clip")
    if cfg.train.min_lr:
        raise SystemExit(f"--recipe {recipe}: open_clip's cosine ends at 0, the recipe at min_lr")
    return cfg, resolve_model_config(cfg.model), overrides


def _env(threads: int) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    return env


def _run(cmd: list[str], log: Path, threads: int) -> None:
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as fh:
        proc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, env=_env(threads))
    if proc.returncode != 0:
        tail = "\n".join(log.read_text().splitlines()[-15:])
        raise SystemExit(f"{' '.join(cmd[:4])} ... failed (exit {proc.returncode}); {log}:\n{tail}")


def train_hyvl(recipe, overrides, shards, run: Path, seed: int, threads: int, init=None) -> dict:
    cfg_over = [
        *overrides,
        *([f"model.openclip_init={init}"] if init else []),
        f"train.seed={seed}",
        f"data.train_shards={shards}",
        "train.log_every=10",
        "train.eval_every=0",
        "eval.zeroshot=",  # both are scored afterwards, by the same code
        "eval.retrieval=",
    ]
    if run.exists():
        shutil.rmtree(run)  # this tool's own run folder: a fresh run, never a resume
    cmd = [sys.executable, "-m", "hyvl", "train", "--config", recipe, "--output-dir", str(run)]
    cmd += cfg_over
    t0 = time.perf_counter()
    _run(cmd, run.with_suffix(".log"), threads)
    seconds = time.perf_counter() - t0
    records = [
        json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line
    ]
    points = [(r["step"], r["loss"], r.get("logit_scale")) for r in records if "loss" in r]
    return {"points": points, "seconds": seconds, "checkpoint": str(run / "export")}


_OC_LINE = re.compile(
    r"Train Epoch: \d+ \[\s*(\d+)/\d+.*?Logit Scale: ([0-9.]+).*?Contrastive_loss: ([0-9.eE+-]+)"
)


def parse_openclip_log(text: str, batch: int) -> list[tuple[int, float, float]]:
    """(step, loss, logit scale) from open_clip_train's out.log lines."""
    points = []
    for m in _OC_LINE.finditer(text):
        points.append((int(m.group(1)) // batch, float(m.group(3)), float(m.group(2))))
    return points


def openclip_args(cfg, model_cfg, shard_list, logs: Path, name: str, seed: int, init=None):
    t, d = cfg.train, cfg.data
    return [
        "--model", OPENCLIP_NAME,
        *(["--pretrained", str(init)] if init else []),
        "--train-data", "::".join(shard_list),
        "--dataset-type", "webdataset",
        *(["--dataset-resampled"] if d.resampled else []),
        "--train-num-samples", str(t.max_steps * t.batch_size),
        "--batch-size", str(t.batch_size),
        "--epochs", "1",
        "--workers", str(max(1, d.workers)),
        "--lr", repr(t.lr),
        "--beta1", repr(t.betas[0]),
        "--beta2", repr(t.betas[1]),
        "--eps", repr(t.eps),
        "--wd", repr(t.weight_decay),
        "--warmup", str(t.warmup_steps),
        "--lr-scheduler", "cosine",
        *(["--grad-clip-norm", repr(t.grad_clip)] if t.grad_clip else []),
        "--precision", {"fp32": "fp32", "bf16": "amp_bf16", "fp16": "amp"}[t.mixed_precision],
        "--seed", str(seed),
        "--aug-cfg", f"scale=({d.rrc_scale[0]}, {d.rrc_scale[1]})",
        "--image-mean", *map(repr, model_cfg.pixel_mean),
        "--image-std", *map(repr, model_cfg.pixel_std),
        "--image-interpolation", "bicubic",
        "--log-every-n-steps", "10",
        "--save-frequency", "1",
        "--zeroshot-frequency", "0",
        "--device", "cpu",
        "--logs", str(logs),
        "--name", name,
    ]  # fmt: skip


def train_openclip(cfg, model_cfg, registry, shard_list, run: Path, seed, threads, init=None):
    if run.exists():
        shutil.rmtree(run)  # open_clip_train refuses an existing experiment name
    args = openclip_args(cfg, model_cfg, shard_list, run.parent, run.name, seed, init)
    cmd = [sys.executable, str(Path(__file__).resolve()), "_open_clip_worker", str(registry), *args]
    t0 = time.perf_counter()
    _run(cmd, run.with_suffix(".log"), threads)
    seconds = time.perf_counter() - t0
    points = parse_openclip_log((run / "out.log").read_text(), cfg.train.batch_size)
    if not points:
        raise SystemExit(f"{run / 'out.log'}: no training lines (open_clip_train's log format?)")
    return {"points": points, "seconds": seconds, "checkpoint": str(run / "checkpoints/epoch_1.pt")}


def initial_weights(registry: Path, seed: int, path: Path) -> Path:
    """open_clip's initial model at ``seed`` (its own init, as open_clip_train draws it) as a
    state dict file: ``--same-init`` starts both trainers from it (hyvl through
    ``model.openclip_init``, open_clip_train through ``--pretrained``)."""
    import open_clip
    import torch

    load_openclip_registry(registry)
    torch.manual_seed(seed)
    model = open_clip.create_model(OPENCLIP_NAME)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), path)
    return path


def _open_clip_worker(argv: list[str]) -> None:
    """The open_clip_train process: this tool's model config registered, then its main()."""
    load_openclip_registry(Path(argv[0]))
    import functools

    import open_clip_train.data
    from open_clip_train.main import main as openclip_main

    # webdataset >= 0.2.95 ends every shard with an empty {} marker, which open_clip_train's
    # own grouping (group_by_keys_nothrow, written for webdataset <= 0.2.86) reads as a file
    # and fails on (KeyError 'fname'). webdataset's eof_value=None leaves the marker out; the
    # samples (keys unique across hyvl's shards) are grouped exactly as before.
    open_clip_train.data.tar_file_expander = functools.partial(
        open_clip_train.data.tar_file_expander, eof_value=None
    )

    openclip_main(argv[1:])


# ------------------------------------------------------------------------------------------
# one zero-shot evaluation for both
# ------------------------------------------------------------------------------------------


def zeroshot(model, data: Path) -> dict:
    """hyvl's zero-shot on DATA/zeroshot: top-1, per class and per family (DATA/hierarchy.tsv)."""
    from hyvl.evaluation.zeroshot import evaluate_zeroshot
    from hyvl.models.tokenizer import get_tokenizer
    from hyvl.models.transforms import image_transform

    preprocess = image_transform(model.image_size)
    tokenizer = get_tokenizer(model.config.text)
    res = evaluate_zeroshot(
        model, preprocess, tokenizer, data / "zeroshot", hierarchy=data / "hierarchy.tsv"
    )
    keys = ("top1", "per_family", "per_class", "num_predicted_classes", "num_classes")
    return {k: res[k] for k in keys}


# ------------------------------------------------------------------------------------------
# summary
# ------------------------------------------------------------------------------------------


def mean_sd(values: list[float]) -> tuple[float, float | None]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else None)


def curve(points: list, steps: list[int], batch: int) -> dict[int, float]:
    """loss / ln B at each of ``steps``: the mean of the logged values in (s - window, s]."""
    out = {}
    for s in steps:
        vals = [loss for step, loss, _ in points if s - CURVE_WINDOW < step <= s]
        if vals:
            out[s] = statistics.fmean(vals) / math.log(batch)
    return out


def stuck_from(points: list, batch: int, tol: float = 0.02) -> int | None:
    """The first logged step from which the loss stays within ``tol`` of ln B to the end (a
    collapsed or never-learning run), or None."""
    first = None
    for step, loss, _ in points:
        if loss / math.log(batch) >= 1 - tol:
            first = step if first is None else first
        else:
            first = None
    return first


def verdict(h: list[float], o: list[float]) -> dict:
    """hyvl minus open_clip and whether it is inside 2 standard errors of that difference."""
    diff = statistics.fmean(h) - statistics.fmean(o)
    if len(h) < 2 or len(o) < 2:
        return {"diff": diff, "se": None, "verdict": "one seed"}
    se = math.sqrt(statistics.variance(h) / len(h) + statistics.variance(o) / len(o))
    word = "better" if diff > 2 * se else "worse" if diff < -2 * se else "within seed noise"
    return {"diff": diff, "se": se, "verdict": word}


def summarise(results: dict, seeds: list[int], batch: int, steps: int) -> dict:
    curve_steps = sorted({s for s in (10, 50, 100, 200, 300, 400, steps) if s <= steps})
    out: dict[str, Any] = {}
    for trainer in TRAINERS:
        runs = [results[trainer][s] for s in seeds]
        top1 = [r["eval"]["top1"] for r in runs]
        fams = sorted(runs[0]["eval"]["per_family"])
        classes = list(runs[0]["eval"]["per_class"])
        m, sd = mean_sd(top1)
        curves = [curve(r["points"], curve_steps, batch) for r in runs]
        out[trainer] = {
            "top1": m,
            "top1_sd": sd,
            "per_family": {f: mean_sd([r["eval"]["per_family"][f] for r in runs])[0] for f in fams},
            "per_family_sd": {
                f: mean_sd([r["eval"]["per_family"][f] for r in runs])[1] for f in fams
            },
            "per_class": {
                c: mean_sd([r["eval"]["per_class"][c] for r in runs])[0] for c in classes
            },
            "curve_loss_over_ln_b": {
                str(s): statistics.fmean([c[s] for c in curves if s in c])
                for s in curve_steps
                if any(s in c for c in curves)
            },
            "final_logit_scale": statistics.fmean([r["points"][-1][2] or math.nan for r in runs]),
            "train_seconds": statistics.fmean([r["seconds"] for r in runs]),
            "per_seed": [
                {
                    "seed": s,
                    **r["eval"],
                    "final_loss_over_ln_b": r["points"][-1][1] / math.log(batch),
                    "stuck_from": stuck_from(r["points"], batch),
                    "curve": [[p[0], p[1]] for p in r["points"]],
                    "train_seconds": r["seconds"],
                }
                for s, r in zip(seeds, runs, strict=True)
            ],
        }
    h, o = [[r["eval"] for r in (results[t][s] for s in seeds)] for t in TRAINERS]
    comparison = {"top1": verdict([e["top1"] for e in h], [e["top1"] for e in o])}
    for fam in out["hyvl"]["per_family"]:
        comparison[fam] = verdict(
            [e["per_family"][fam] for e in h], [e["per_family"][fam] for e in o]
        )
    out["comparison"] = comparison
    return out


def report(summary: dict, seeds: list[int], chance: float) -> list[str]:
    from hyvl.cli.common import print_table

    def cell(trainer, key, fam=None):
        m = summary[trainer][key] if fam is None else summary[trainer][key][fam]
        sd = summary[trainer][key + "_sd"] if fam is None else summary[trainer][key + "_sd"][fam]
        return f"{m:.2f}" + (f" +- {sd:.2f}" if sd is not None else "")

    fams = list(summary["hyvl"]["per_family"])
    rows = []
    for trainer in TRAINERS:
        row = {"trainer": trainer, "top-1 %": cell(trainer, "top1")}
        row.update({f"{f} %": cell(trainer, "per_family", f) for f in fams})
        row["train s"] = f"{summary[trainer]['train_seconds']:.0f}"
        rows.append(row)
    comp = summary["comparison"]
    rows.append(
        {
            "trainer": "hyvl - open_clip",
            "top-1 %": _diff_cell(comp["top1"]),
            **{f"{f} %": _diff_cell(comp[f]) for f in fams},
        }
    )
    print_table(
        rows,
        f"zero-shot top-1 over seeds {seeds} (mean +- sd; chance {chance:.1f}%; "
        "diff +- its standard error)",
    )
    steps = list(summary["hyvl"]["curve_loss_over_ln_b"])
    crow = []
    for trainer in TRAINERS:
        c = summary[trainer]["curve_loss_over_ln_b"]
        crow.append(
            {
                "trainer": trainer,
                **{f"step {s}": f"{c[s]:.3f}" for s in steps if s in c},
                "logit scale": f"{summary[trainer]['final_logit_scale']:.2f}",
            }
        )
    print_table(crow, f"training loss / ln B (mean of the logged steps in (s-{CURVE_WINDOW}, s])")
    if comp["top1"]["se"] is None:
        notes = ["top-1: one seed, no noise estimate (run several --seeds)"]
    else:
        notes = [f"top-1: hyvl's CLIP is {comp['top1']['verdict']} against open_clip_train"]
    for trainer in TRAINERS:
        stuck = [
            f"seed {r['seed']} from step {r['stuck_from']}"
            for r in summary[trainer]["per_seed"]
            if r["stuck_from"] is not None
        ]
        if stuck:
            notes.append(
                f"{trainer}: the loss stays within 2% of ln B to the end (collapsed or never "
                f"learning) in {', '.join(stuck)}"
            )
    for fam in fams:
        learned = {t: summary[t]["per_family"][fam] >= 3 * chance for t in TRAINERS}
        if not any(learned.values()):
            notes.append(
                f"neither trainer learns the family {fam!r} (below 3x chance, "
                f"{summary['hyvl']['per_family'][fam]:.1f}% / "
                f"{summary['open_clip']['per_family'][fam]:.1f}%): the recipe's limit, not the "
                "trainer's"
            )
        elif not all(learned.values()):
            who = [t for t, ok in learned.items() if not ok][0]
            notes.append(f"only one trainer learns {fam!r} (>= 3x chance); {who} does not")
    return notes


def _diff_cell(v: dict) -> str:
    se = f" +- {v['se']:.2f}" if v["se"] is not None else ""
    return f"{v['diff']:+.2f}{se} ({v['verdict']})"


# ------------------------------------------------------------------------------------------


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, default=Path("runs/parity"), help="working folder")
    p.add_argument("--data", type=Path, default=None, help="a `hyvl data demo --kind real` folder")
    p.add_argument("--recipe", default="clip_tiny", help="a CLIP recipe (default clip_tiny)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--steps", type=int, default=None, help="default: the recipe's")
    p.add_argument(
        "--warmup", type=int, default=None, help="default: the recipe's share of --steps"
    )
    p.add_argument("--batch-size", type=int, default=None, help="default: the recipe's")
    p.add_argument("--threads", type=int, default=2, help="torch threads of each training run")
    p.add_argument("--quick", action="store_true", help="20 steps, 1 seed: a smoke test")
    p.add_argument("--reuse", action="store_true", help="keep finished runs of the same settings")
    p.add_argument(
        "--reeval", action="store_true", help="with --reuse: score the reused runs again"
    )
    p.add_argument(
        "--same-init",
        action="store_true",
        help="start both trainers from open_clip's initial weights at each seed",
    )
    p.add_argument(
        "--parallel", action="store_true", help="train the two trainers of a seed at the same time"
    )
    p.add_argument("--json", metavar="FILE", default=None, help="also write the results as JSON")
    args = p.parse_args(argv)
    if args.quick:
        args.seeds = args.seeds[:1]
        args.steps = args.steps or 20
    return args


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["_open_clip_worker"]:
        _open_clip_worker(argv[1:])
        return 0
    args = parse_args(argv)
    try:  # before any training: the worker would find out only after minutes of hyvl's run
        import open_clip_train.data  # noqa: F401
    except ModuleNotFoundError as e:
        raise SystemExit(
            f"open_clip's trainer cannot start: no module {e.name!r} "
            "(pip install 'hyvl[parity]' adds what open_clip_train.data imports)"
        ) from None
    from hyvl.cli.common import write_json
    from hyvl.models.checkpoint import load_model

    warmup = args.warmup
    if warmup is None and args.steps is not None:  # the recipe's warmup share of its steps
        recipe_train = recipe_settings(args.recipe, None, None, None)[0].train
        warmup = max(1, round(recipe_train.warmup_steps * args.steps / recipe_train.max_steps))
    cfg, model_cfg, overrides = recipe_settings(args.recipe, args.steps, args.batch_size, warmup)
    t = cfg.train
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    data = args.data
    if data is None:
        data = out / "data"
        if not (data / "hierarchy.tsv").is_file():
            from hyvl.data.real import make_real_demo

            make_real_demo(data, progress=True)
    shard_list = sorted(str(p) for p in (data / "train").glob("*.tar"))
    if not shard_list or not (data / "zeroshot").is_dir():
        raise SystemExit(f"{data}: no train/*.tar or zeroshot/ (hyvl data demo --kind real)")
    registry = out / "open_clip_config"
    write_openclip_config(model_cfg, registry)
    settings = {
        "recipe": args.recipe, "steps": t.max_steps, "batch_size": t.batch_size,
        "warmup_steps": t.warmup_steps, "lr": t.lr, "data": str(data.resolve()),
        "init": "open_clip's, shared" if args.same_init else "each trainer's own",
    }  # fmt: skip
    print(f"recipe {args.recipe}: {settings}; seeds {args.seeds}", flush=True)
    results: dict[str, dict[int, dict]] = {tr: {} for tr in TRAINERS}

    def load_final(trainer: str, r: dict):
        if trainer == "hyvl":
            return load_model(r["checkpoint"]).eval()
        return openclip_to_hyvl_model(Path(r["checkpoint"]), model_cfg)

    def train(trainer: str, seed: int, run: Path, init: Path | None) -> dict:
        print(f"{trainer} seed {seed}: training {t.max_steps} steps ...", flush=True)
        if trainer == "hyvl":
            shards = f"{data}/train/*.tar"
            return train_hyvl(args.recipe, overrides, shards, run, seed, args.threads, init)
        return train_openclip(cfg, model_cfg, registry, shard_list, run, seed, args.threads, init)

    for seed in args.seeds:
        todo = {}
        for trainer in TRAINERS:
            run = out / "runs" / f"{trainer}-seed{seed}"
            done = run.with_suffix(".done.json")
            if args.reuse and done.is_file():
                prev = json.loads(done.read_text())
                if {"init": "each trainer's own", **prev["settings"]} == settings:
                    if args.reeval:  # the same weights, scored by this checkout's zero-shot
                        prev["result"]["eval"] = zeroshot(load_final(trainer, prev["result"]), data)
                        done.write_text(json.dumps(prev) + "\n")
                    results[trainer][seed] = prev["result"]
                    print(f"{trainer} seed {seed}: reused {done}", flush=True)
                    continue
            todo[trainer] = run
        init = None
        if args.same_init and todo:
            init = initial_weights(registry, seed, out / "init" / f"open_clip-seed{seed}.pt")
        # --parallel: both trainers of a seed at once, so they also share the machine's load
        with ThreadPoolExecutor(max_workers=2 if args.parallel else 1) as pool:
            futures = {tr: pool.submit(train, tr, seed, run, init) for tr, run in todo.items()}
            trained = {tr: f.result() for tr, f in futures.items()}
        for trainer, r in trained.items():
            r["eval"] = zeroshot(load_final(trainer, r), data)
            r["points"] = [list(p) for p in r["points"]]
            done = todo[trainer].with_suffix(".done.json")
            done.write_text(json.dumps({"settings": settings, "result": r}) + "\n")
            fams = ", ".join(f"{k} {v:.1f}%" for k, v in r["eval"]["per_family"].items())
            print(
                f"{trainer} seed {seed}: top-1 {r['eval']['top1']:.2f}% ({fams}), "
                f"trained in {r['seconds']:.0f} s",
                flush=True,
            )
            results[trainer][seed] = r
    chance = 100.0 / results["hyvl"][args.seeds[0]]["eval"]["num_classes"]
    summary = summarise(results, args.seeds, t.batch_size, t.max_steps)
    notes = report(summary, args.seeds, chance)
    print("\n".join(notes))
    print("not equal between the trainers:\n" + "\n".join(f"- {d}" for d in DIFFERENCES))
    write_json(
        args.json,
        {
            **summary,
            "seeds": args.seeds,
            "settings": settings,
            "chance": chance,
            "notes": notes,
            "differences": DIFFERENCES,
            "open_clip_config": openclip_model_config(model_cfg),
            "machine": f"{platform.node()} {platform.machine()}, {os.cpu_count()} CPUs",
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
