"""Hugging Face Hub ids (``hf-hub:ORG/NAME``) and the model card (README.md) every export carries.

Downloads go through ``huggingface_hub.snapshot_download``, so the hub cache (``HF_HOME`` /
``HF_HUB_CACHE``), ``HF_HUB_OFFLINE=1`` and tokens behave as for every other HF library. A hub
repository holds a plain hyvl export: ``model.safetensors``, ``config.json``, ``README.md``.
Uploading is :func:`hyvl.models.publish.push_to_hub` (``hyvl.push_to_hub``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hyvl.errors import CheckpointError

EXPORT_FILES = ("model.safetensors", "config.json")
HF_HUB_PREFIX = "hf-hub:"


def local_path(spec: str | Path) -> Path:
    """A local path for a checkpoint: ``hf-hub:ORG/NAME[@REV]`` resolved through the hub cache."""
    if isinstance(spec, str) and spec.startswith(HF_HUB_PREFIX):
        return download(spec[len(HF_HUB_PREFIX) :])
    return Path(spec)


def download(repo: str) -> Path:
    """The local snapshot folder of ``ORG/NAME`` or ``ORG/NAME@REVISION`` (cache first).

    With ``HF_HUB_OFFLINE=1`` only the cache is read; a repository that is not there raises
    :class:`CheckpointError` naming it.
    """
    from huggingface_hub import snapshot_download

    repo_id, _, revision = repo.partition("@")
    try:
        folder = snapshot_download(
            repo_id,
            revision=revision or None,
            allow_patterns=[*EXPORT_FILES, "README.md"],
            library_name="hyvl",
        )
    except Exception as err:  # huggingface_hub raises many kinds (offline, 404, auth, HTTP)
        raise CheckpointError(
            f"hf-hub:{repo}: cannot be downloaded or found in the hub cache "
            f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})"
        ) from err
    return Path(folder)


def _metrics(run_dir: Path | None) -> dict[str, Any] | None:
    """The last record of a training run's eval.jsonl, flattened to ``a/b`` keys (without the
    zero-shot per-class figures and family statistics: a card for ImageNet would list 1000)."""
    if run_dir is None or not (run_dir / "eval.jsonl").is_file():
        return None
    lines = [ln for ln in (run_dir / "eval.jsonl").read_text().splitlines() if ln.strip()]
    if not lines:
        return None
    flat: dict[str, Any] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                if k not in ("per_class", "family_stats"):
                    walk(f"{prefix}/{k}" if prefix else str(k), v)
        elif isinstance(value, (int, float)):
            flat[prefix] = value

    try:
        walk("", json.loads(lines[-1]))
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{run_dir / 'eval.jsonl'}: last line is not JSON ({err})") from err
    return flat


def _training(run_dir: Path | None) -> str:
    if run_dir is None or not (run_dir / "config.yaml").is_file():
        return (
            "Not recorded: this export was written directly with `hyvl.save`, not by `hyvl train`."
        )
    import yaml

    cfg = yaml.safe_load((run_dir / "config.yaml").read_text()) or {}
    data, train = cfg.get("data") or {}, cfg.get("train") or {}
    rows = [
        ("training shards", data.get("train_shards")),
        ("objective", (cfg.get("objective") or {}).get("kind")),
        ("steps", train.get("max_steps")),
        ("batch size", train.get("batch_size")),
        ("learning rate", train.get("lr")),
        ("precision", train.get("mixed_precision")),
    ]
    return "\n".join(f"- {k}: `{v}`" for k, v in rows if v is not None)


def _curvature_text(curv) -> str:
    """The card's curvature cell: ``c``, the range of a product's ``c_f``, or none."""
    if curv is None:
        return "- (euclidean)"
    if curv.ndim:
        return f"{len(curv)} factors, {curv.min().item():.4f} to {curv.max().item():.4f}"
    return f"{curv.item():.4f}"


def model_card(model, run_dir: str | Path | None = None, repo_id: str | None = None) -> str:
    """README.md text for an export of ``model``: use, geometry and curvature, data, metrics, config.

    ``run_dir``: the training output directory the export comes from (its config.yaml gives
    the training data, its eval.jsonl the metrics), or None.
    """
    import hyvl
    from hyvl.config import to_dict

    run_dir = Path(run_dir) if run_dir is not None else None
    cfg = model.config
    curv = model.curv
    family = (cfg.name or "hyvl").split("_")[0]
    where = f"hf-hub:{repo_id}" if repo_id else "PATH_TO_THIS_FOLDER"
    params = sum(p.numel() for p in model.parameters())
    lines = [
        "---",
        "library_name: hyvl",
        "tags:",
        "- hyvl",
        "- vision-language",
        f"- {cfg.geometry}",
        *(["- hyperbolic"] if model.space.hyperbolic else []),
        "---",
        "",
        f"# {cfg.name or 'hyvl model'}",
        "",
        f"A {family} vision-language model in {cfg.geometry} geometry, exported by hyvl "
        f"{hyvl.__version__}.",
        "",
        "```python",
        "import hyvl",
        "",
        f'model, preprocess, tokenizer = hyvl.load("{where}")',
        "scores = hyvl.similarity(model.encode_image(images), model.encode_text(tokens), model)",
        "```",
        "",
        "## Model",
        "",
        "| geometry | curvature | embed dim | image size | parameters | logit scale |",
        "| --- | --- | --- | --- | --- | --- |",
        f"| {cfg.geometry} | {_curvature_text(curv)} "
        f"| {cfg.embed_dim} | {cfg.vision.image_size} | {params / 1e6:.1f} M "
        f"| {model.logit_scale_exp.item():.2f} |",
        "",
        "Curvature is the learned `c` of each hyperboloid (curvature `-c`); embeddings are their "
        "space components and similarity is the negative mean of the factors' geodesic "
        "distances (a product of Lorentz factors, PHyCLIP)."
        if model.space.product
        else "Curvature is the `c` of the hyperboloid of curvature `-c`; embeddings are its space "
        "components and an image's score for a text is the exterior angle at the image of the "
        "triangle (origin, image, text), ATMG's (`model.score: atmg_angle`)."
        if cfg.score == "atmg_angle"
        else "Curvature is the learned `c` of the hyperboloid of curvature `-c`; embeddings are its "
        "space components and similarity is the negative geodesic distance."
        if model.space.hyperbolic
        else "Embeddings are unit vectors; similarity is the cosine.",
        "",
        "## Training data",
        "",
        _training(run_dir),
        "",
        "## Evaluation",
        "",
    ]
    metrics = _metrics(run_dir)
    if metrics:
        lines += ["| metric | value |", "| --- | --- |"]
        lines += [f"| {k} | {v:.4g} |" for k, v in metrics.items()]
        lines += ["", "(the last periodic evaluation of the run, from its eval.jsonl)"]
    else:
        lines.append("No evaluation recorded with this export.")
    config = json.dumps(to_dict(cfg), indent=2)
    lines += ["", "## Config", "", "```json", config, "```", ""]
    return "\n".join(lines)


def write_model_card(
    directory: str | Path, model, run_dir: str | Path | None = None, repo_id: str | None = None
) -> Path:
    path = Path(directory) / "README.md"
    path.write_text(model_card(model, run_dir, repo_id))
    return path
