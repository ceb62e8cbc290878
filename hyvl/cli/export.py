"""``hyvl export onnx|hub|merge``: deployable files from a checkpoint."""

from __future__ import annotations

import argparse

from hyvl.cli.common import OutputDir, add_json_arg


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "export",
        help="export a checkpoint: ONNX towers, or a folder ready for the Hugging Face Hub",
        description="Export a checkpoint (export dir, training output dir or MERU/HyCoCLIP .pth).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    sub = p.add_subparsers(dest="export_cmd", required=True)
    onnx = sub.add_parser(
        "onnx",
        help="image.onnx and text.onnx (dynamic batch) for onnxruntime",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    hub = sub.add_parser(
        "hub",
        help="model.safetensors + config.json + README.md (model card) for push_to_hub",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    merge = sub.add_parser(
        "merge",
        help="fold a LoRA run's adapters into the weights: a plain export, loadable without peft",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    for q in (onnx, hub, merge):
        q.add_argument("--checkpoint", required=True, help="checkpoint to export")
        q.add_argument("--out", required=True, action=OutputDir, help="output folder")
        add_json_arg(q, "the result")
    onnx.add_argument(
        "--check", action="store_true", help="run both graphs in onnxruntime against torch"
    )
    hub.add_argument("--repo-id", default=None, help="ORG/NAME written into the card's example")
    merge.set_defaults(func=run_merge)
    onnx.set_defaults(func=run_onnx)
    hub.set_defaults(func=run_hub)


def run_onnx(args) -> int:
    from hyvl.cli.common import print_table, write_json
    from hyvl.models.checkpoint import load_model
    from hyvl.models.onnx_export import check_onnx, export_onnx

    model = load_model(args.checkpoint)
    paths = export_onnx(model, args.out)
    result = {"files": paths}
    if args.check:
        result["max_abs_diff"] = check_onnx(model, args.out)
    rows = [{"tower": k, "file": v} for k, v in paths.items()]
    for row in rows:
        if "max_abs_diff" in result:
            row["max |onnx - torch|"] = result["max_abs_diff"][row["tower"]]
    print_table(rows, title=f"onnx export of {args.checkpoint}")
    write_json(args.json, result)
    return 0


def run_hub(args) -> int:
    from pathlib import Path

    from hyvl.cli.common import print_table, write_json
    from hyvl.models.publish import prepare_folder

    out = prepare_folder(args.checkpoint, args.out, args.repo_id)
    files = sorted(p.name for p in Path(out).iterdir())
    print_table([{"file": f} for f in files], title=f"hub folder {out}")
    print(f"upload: hyvl.push_to_hub({str(out)!r}, {args.repo_id or 'ORG/NAME'!r})")
    write_json(args.json, {"folder": str(out), "files": files})
    return 0


def run_merge(args) -> int:
    """RUN (its newest checkpoint) or RUN/checkpoints/step_N -> a plain export in --out."""
    from pathlib import Path

    from hyvl.cli.common import print_table, write_json
    from hyvl.errors import CheckpointError
    from hyvl.models.checkpoint import _is_step_checkpoint, _load_step_checkpoint, save
    from hyvl.train.checkpoint import latest_checkpoint

    path = Path(args.checkpoint)
    if not _is_step_checkpoint(path):
        latest = latest_checkpoint(path)
        if latest is None:
            raise CheckpointError(
                f"{path}: neither a training output directory with checkpoints/step_* nor a "
                "step checkpoint (RUN/checkpoints/step_N)"
            )
        path = latest[1]
    model = _load_step_checkpoint(path, merge=False)
    from hyvl.models.lora import has_adapters, merged

    adapted = [n for n, m in model.named_modules() if hasattr(m, "lora_A")]
    plain = merged(model) if has_adapters(model) else model
    save(plain, args.out, run_dir=path.parent.parent)
    print_table(
        [{"checkpoint": str(path), "adapted layers": len(adapted), "export": str(args.out)}],
        title="merged export" if adapted else "export (the run has no adapters)",
    )
    write_json(args.json, {"checkpoint": str(path), "adapted": adapted, "export": str(args.out)})
    return 0
