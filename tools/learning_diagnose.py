"""Gradient norms per loss term and per parameter group during a short training run.

Why a run does not learn is rarely visible in the total gradient norm: this trains a recipe
exactly as ``hyvl train`` does (same model, objective, AdamW groups, schedule, clipping, data
stream) and, every ``--every`` steps, also takes the gradient of each loss term on its own
(whole-image contrastive, box contrastive, entailment with its current weight) with respect to
each parameter group (image tower, text tower, the alphas, curvature, logit scale). It prints
one table row per diagnosed step and writes them as JSON lines with ``--json``.

    python tools/learning_diagnose.py --config hycoclip_tiny --steps 80 \
        data.train_shards='runs/digits/data/train/*.tar'

No checkpoint is written; nothing is downloaded.
"""

from __future__ import annotations

import argparse
import json
import math
import sys

import torch

from hyvl.config import load_run_config
from hyvl.train.health import embedding_stats
from hyvl.train.state import build_loader, build_state, make_accelerator


def groups(model) -> dict[str, list]:
    out: dict[str, list] = {
        "image_tower": [],
        "text_tower": [],
        "alpha": [],
        "curv": [],
        "scale": [],
    }
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if name.startswith(("visual.", "visual_proj")):
            out["image_tower"].append(p)
        elif name.startswith(("textual.", "textual_proj")):
            out["text_tower"].append(p)
        elif name.endswith("_alpha"):
            out["alpha"].append(p)
        elif name == "log_curv":
            out["curv"].append(p)
        elif name == "logit_scale":
            out["scale"].append(p)
    return {k: v for k, v in out.items() if v}


def term_losses(losses: dict, weight: float) -> dict:
    """The loss split into the parts whose gradients are compared (each as it enters the loss)."""
    parts = {}
    if "contrastive_boximage_text" in losses:
        whole = 0.25 * (losses["contrastive_image_text"] + losses["contrastive_text_image"])
        box = 0.25 * (losses["contrastive_boximage_text"] + losses["contrastive_boxtext_image"])
        parts["c_whole"], parts["c_box"] = whole, box
    else:
        parts["c_whole"] = losses["contrastive"]
    if "entail_gate" in losses:  # objective.entail_gate: the weight the loss really used
        weight = weight * float(losses["entail_gate"])
    if "entail" in losses and weight > 0:
        parts["entail"] = weight * losses["entail"]
    return parts


def grad_norms(term, params_by_group) -> dict:
    flat = [p for ps in params_by_group.values() for p in ps]
    grads = torch.autograd.grad(term, flat, retain_graph=True, allow_unused=True)
    out, i = {}, 0
    for name, ps in params_by_group.items():
        sq = sum(float(g.pow(2).sum()) for g in grads[i : i + len(ps)] if g is not None)
        out[name] = math.sqrt(sq)
        i += len(ps)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", required=True)
    p.add_argument("--steps", type=int, default=80)
    p.add_argument("--every", type=int, default=10)
    p.add_argument("--json", help="write one JSON line per diagnosed step here")
    p.add_argument("overrides", nargs="*")
    args = p.parse_args()
    cfg = load_run_config(args.config, [*args.overrides, f"train.max_steps={args.steps}"])
    accelerator = make_accelerator(cfg, "/tmp")
    state = build_state(cfg, accelerator)
    loader = iter(build_loader(state))
    module, model = state.train_module, state.model
    objective = module.objective
    by_group = groups(model)
    trainable = [q for q in module.parameters() if q.requires_grad]
    rows = []
    out = open(args.json, "w") if args.json else None  # noqa: SIM115
    for step in range(args.steps):
        batch = next(loader)
        objective.step = step
        emb = model(
            batch.images,
            batch.tokens,
            box_images=batch.box_images,
            box_tokens=batch.box_tokens,
            box_towers=cfg.train.box_towers,
        )
        losses = objective(emb)
        diag = (step + 1) % args.every == 0 or step == 0
        if diag:
            # lambda the loss used: learned (objective.learn_entail_weight) or the config's
            weight = objective.entail_scale() * objective.entail_weight
            row = {"step": step + 1}
            for name, term in term_losses(losses, weight).items():
                for g, v in grad_norms(term, by_group).items():
                    row[f"{name}/{g}"] = v
            row["loss_over_ln_b"] = losses["contrastive"].item() / math.log(batch.images.shape[0])
            for key in ("contrastive_image_text", "contrastive_boximage_text", "entail"):
                if key in losses:
                    row[key] = losses[key].item()
            stats = embedding_stats(emb, contrastive_loss=None, global_batch=batch.images.shape[0])
            row.update({k: v for k, v in stats.items() if k.startswith(("spread", "d0"))})
            row["logit_scale"] = float(emb.logit_scale)
            if emb.curv is not None:
                row["curv"] = float(emb.curv)
                row["alpha_v"] = float(model.visual_alpha.exp())
                row["alpha_t"] = float(model.textual_alpha.exp())
        losses["loss"].backward()
        norm = float(torch.nn.utils.clip_grad_norm_(trainable, cfg.train.grad_clip or math.inf))
        state.optimizer.step()
        objective.clamp_scalars_()  # objective.learn_entail_weight's bounds, as hyvl train
        state.optimizer.zero_grad(set_to_none=True)
        state.scheduler.step()
        if diag:
            row["grad_norm"] = norm
            rows.append(row)
            short = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()}
            print(json.dumps(short), flush=True)
            if out:
                out.write(json.dumps(row) + "\n")
                out.flush()
    if out:
        out.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
