"""Checks before anything is built: every path of the run config, the first samples, the recipe.

A run that would fail at its first evaluation, or spin on shards it cannot use, fails here in
seconds instead, with one line naming the key, the path and what to change
(:class:`~hyvl.errors.ConfigError` / :class:`~hyvl.errors.DataError`; the CLI exits 2).
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import Any

from hyvl.config import RunConfig
from hyvl.errors import ConfigError, DataError

# Samples read from the first shards to see that they decode and can feed the recipe.
PROBE_SAMPLES = 64
REMOTE = ("pipe:", "http://", "https://", "gs://", "s3://")


def preflight(cfg: RunConfig) -> dict[str, Any]:
    """Raise on the first problem; returns what the probe saw (``{"probed", "usable",
    "skipped", "dropped_boxes"}``) when everything is usable."""
    check_model_paths(cfg)
    if cfg.eval.zeroshot or cfg.eval.retrieval:
        check_eval_paths(cfg)
    if not cfg.data.train_shards:
        raise ConfigError("data.train_shards is empty: pass data.train_shards=PATH/{000..009}.tar")
    return probe_shards(cfg)


def _where(path: str | Path) -> str:
    path = Path(path)
    return str(path) if path.is_absolute() else f"{path} (relative to {os.getcwd()})"


def _readable_file(key: str, value: str, fix: str) -> None:
    path = Path(value)
    if not path.is_file():
        raise ConfigError(f"{key}={value!r}: no such file {_where(path)}; {fix}")
    if not os.access(path, os.R_OK):
        raise ConfigError(f"{key}={value!r}: the file is not readable (permissions); {fix}")


def check_model_paths(cfg: RunConfig) -> None:
    """Local weight files named by the model config exist (they are read only when built)."""
    from hyvl.models.registry import resolve_model_config

    model = resolve_model_config(cfg.model)
    for key, value in (
        ("model.vision.pretrained", model.vision.pretrained),
        ("model.openclip_init", getattr(model, "openclip_init", None)),
    ):
        if value:
            _readable_file(key, value, "give a local weights file (nothing is downloaded)")
    spec = model.init
    if spec:
        from hyvl.models.init import is_name

        path = Path(spec).expanduser()
        if not is_name(spec) and not path.exists():
            raise ConfigError(
                f"model.init={spec!r}: no such file or directory {_where(path)}; give an open_clip "
                "NAME:TAG (ViT-B-16:openai), hf-hub:ORG/NAME, or a local checkpoint / folder"
            )
        if path.exists() and not os.access(path, os.R_OK):
            raise ConfigError(f"model.init={spec!r}: not readable (permissions)")


def check_eval_paths(cfg: RunConfig) -> None:
    """The periodic evaluation's data has what evaluation needs (it runs only much later)."""
    skip = "or set it to '' to train without that evaluation"
    demo = "check the path"
    if cfg.eval.zeroshot:
        spec = cfg.eval.zeroshot
        path = Path(spec)
        if spec.startswith("torchvision:"):
            root = Path(spec.split(":", 2)[-1]) if spec.count(":") >= 2 else None
            if root is not None and not root.is_dir():
                raise ConfigError(f"eval.zeroshot={spec!r}: no folder {_where(root)}; {skip}")
        elif not path.exists():
            raise ConfigError(
                f"eval.zeroshot={spec!r}: {_where(path)} does not exist; {demo}, {skip}"
            )
        elif not path.is_dir():
            raise ConfigError(
                f"eval.zeroshot={spec!r}: training's evaluation needs an ImageFolder directory "
                f"(one folder per class, optional classnames.txt), not a file; {skip}"
            )
        elif not any(p.is_dir() for p in path.iterdir()):
            raise ConfigError(
                f"eval.zeroshot={spec!r}: {_where(path)} has no class folders "
                f"(ImageFolder layout: CLASS/IMAGE.jpg); {skip}"
            )
        else:  # WordNet ids -> ImageNet's names; other id-like names warn now, not at step N
            from hyvl.evaluation.classnames import folder_classnames

            folder_classnames(path, sorted(p.name for p in path.iterdir() if p.is_dir()))
    if cfg.eval.retrieval:
        spec = cfg.eval.retrieval
        _readable_file("eval.retrieval", spec, f"{demo}, {skip}")
        images = Path(spec).parent / "images"
        if not images.is_dir():
            raise ConfigError(
                f"eval.retrieval={spec!r}: the images folder {_where(images)} beside it is "
                f"missing; {skip}"
            )
    if cfg.eval.hierarchy:
        from hyvl.errors import DataError
        from hyvl.evaluation.taxonomy import Hierarchy

        _readable_file("eval.hierarchy", cfg.eval.hierarchy, "or set eval.hierarchy=''")
        try:
            Hierarchy.from_tsv(cfg.eval.hierarchy)
        except DataError as err:
            raise ConfigError(f"eval.hierarchy: {err}") from None
    if cfg.eval.templates:
        from hyvl.evaluation.templates import BUILTIN

        if cfg.eval.templates not in BUILTIN:
            _readable_file(
                "eval.templates", cfg.eval.templates, f"or one of {sorted(BUILTIN)} or ''"
            )


def probe_shards(cfg: RunConfig) -> dict[str, Any]:
    """Shards expand to readable files; the first samples decode and can feed the recipe.

    Reads up to :data:`PROBE_SAMPLES` samples (parsing only, no tower): with boxes needed
    (``data.boxes_per_sample > 0``) at least one must keep a box after ``data.min_box_size``.
    """
    from hyvl.data.layouts import Skip, parse_sample
    from hyvl.data.pipeline import explain_skips
    from hyvl.data.shards import expand_shards, raw_samples

    data = cfg.data
    key = "data.train_shards"
    try:
        urls = expand_shards(data.train_shards)
    except DataError as err:
        raise DataError(f"{key}={data.train_shards!r}: {err}; check the path") from None
    local = [u for u in urls if not u.startswith(REMOTE)]
    for url in local:
        path = Path(url)
        if not path.is_file():
            raise DataError(f"{key}: shard {_where(path)} does not exist; check the path or glob")
        if not os.access(path, os.R_OK):
            raise DataError(f"{key}: shard {url!r} is not readable (permissions)")
    skipped: Counter = Counter()
    dropped: Counter = Counter()
    probed = usable = 0
    for raw in raw_samples(urls[: max(1, min(len(urls), 8))], skipped, notes={}):
        probed += 1
        try:
            sample, drops = parse_sample(raw, data.layout, data.min_box_size)
        except Skip as skip:
            skipped[skip.reason] += 1
        else:
            dropped.update(drops)
            if data.boxes_per_sample > 0 and sample.num_boxes == 0:
                skipped["no_usable_box"] += 1
            else:
                usable += 1
        if probed >= PROBE_SAMPLES:
            break
    seen = {"probed": probed, "usable": usable, "skipped": dict(skipped)}
    seen["dropped_boxes"] = dict(dropped)
    if probed == 0:
        shards = sum(skipped.values())
        raise DataError(
            f"{key}={data.train_shards!r}: no sample could be read from the first shards "
            f"({shards} unreadable or truncated: {dict(skipped)}); are they webdataset tar files?"
        )
    if usable == 0:
        hint = explain_skips(dict(skipped), dict(dropped), min_box_size=data.min_box_size)
        boxes = f"; boxes dropped: {dict(dropped)}" if dropped else ""
        raise DataError(
            f"{key}: none of the first {probed} samples can be used "
            f"(skipped: {dict(skipped)}{boxes}); {hint}"
        )
    return seen
