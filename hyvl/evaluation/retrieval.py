"""Image <-> text retrieval: Recall@K where a query hits when ANY of its ground truths is in the top K."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from hyvl.errors import DataError
from hyvl.evaluation.embed import Shard, embed_images, embed_texts, similarity
from hyvl.evaluation.files import ImageFiles, drop_skipped, gather_counts

KS = (1, 5, 10)


def recall_at_k(scores: torch.Tensor, positives: list[set[int]], ks=KS, chunk: int = 1024):
    """Percent of queries (rows of ``scores``) with a positive among their top K columns.

    Ties are broken by column index (a stable descending sort): with equal scores the item
    listed first ranks first, so results never depend on the sort's mood. Computed in chunks
    of rows, not with torchmetrics' RetrievalRecall (true recall, and O(Q x N) Python loops).
    """
    kmax = min(max(ks), scores.shape[1])
    hits = {k: 0 for k in ks}
    for start in range(0, scores.shape[0], chunk):
        block = scores[start : start + chunk]
        order = torch.sort(block, dim=1, descending=True, stable=True).indices[:, :kmax]
        for row, ranked in enumerate(order.tolist()):
            pos = positives[start + row]
            first = next((r for r, item in enumerate(ranked) if item in pos), None)
            for k in ks:
                hits[k] += first is not None and first < k
    n = scores.shape[0]
    return {f"R@{k}": 100.0 * hits[k] / n for k in ks}


def load_coco(captions_json: str | Path, image_root: str | Path | None = None):
    """(image paths, captions, caption -> image index) from a COCO / Karpathy captions JSON."""
    path = Path(captions_json)
    root = Path(image_root) if image_root else path.parent / "images"
    try:
        coco = json.loads(path.read_text())
        images = sorted(coco["images"], key=lambda im: im["id"])
        index = {im["id"]: i for i, im in enumerate(images)}
        anns = sorted(coco["annotations"], key=lambda a: a.get("id", 0))
        texts = [a["caption"].strip() for a in anns]
        owner = [index[a["image_id"]] for a in anns]
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as err:
        raise DataError(f"{path}: not a COCO captions file ({type(err).__name__}: {err})") from err
    paths = [root / im["file_name"] for im in images]
    missing = [p for p in paths if not p.is_file()]
    if missing:
        raise DataError(f"{path}: {len(missing)} image(s) missing under {root}, e.g. {missing[0]}")
    return paths, texts, owner


def duplicate_captions(keys: list, owner: list[int]) -> dict[str, Any]:
    """How far duplicate captions cap text -> image retrieval.

    ``keys[t]`` identifies caption ``t`` (its text, or its token ids); a caption that also
    belongs to other images embeds identically for all of them, so even a perfect model ranks
    its image first only 1/m of the time (m = images sharing the caption). Returns
    ``{"queries": captions with an identical caption on another image, "text_to_image_R@1_ceiling":
    the best expected text -> image R@1 in percent}``.
    """
    images_of: dict[Any, set[int]] = {}
    for key, image in zip(keys, owner, strict=True):
        images_of.setdefault(key, set()).add(image)
    shared = [len(images_of[key]) for key in keys]
    return {
        "queries": sum(m > 1 for m in shared),
        "text_to_image_R@1_ceiling": 100.0 * sum(1 / m for m in shared) / max(len(shared), 1),
    }


def retrieval_metrics(
    image_emb, text_emb, owner: list[int], model, keys: list | None = None
) -> dict[str, Any]:
    """The retrieval JSON (docs/contract.md) from embeddings; ``owner[t]`` is the image index of caption ``t``.

    ``keys`` (caption texts or token tuples) adds ``duplicate_captions`` (see
    :func:`duplicate_captions`)."""
    scores = similarity(model, image_emb, text_emb)  # (I, T)
    texts_of: list[set[int]] = [set() for _ in range(image_emb.shape[0])]
    for t, i in enumerate(owner):
        texts_of[i].add(t)
    out = {
        "image_to_text": recall_at_k(scores, texts_of),
        "text_to_image": recall_at_k(scores.T, [{i} for i in owner]),
        "num_images": int(image_emb.shape[0]),
        "num_texts": int(text_emb.shape[0]),
    }
    if keys is not None:
        out["duplicate_captions"] = duplicate_captions(keys, owner)
    return out


@torch.no_grad()
def evaluate_retrieval(
    model,
    preprocess,
    tokenizer,
    data: str | Path,
    image_root: str | Path | None = None,
    *,
    batch_size: int = 64,
    shard: Shard | None = None,
    workers: int = 0,
    precision: str = "fp32",
) -> dict[str, Any]:
    """Recall@1/5/10 both ways on a COCO captions JSON (+ image root) or on shards (one
    caption per image) -> ``{"image_to_text": {...}, "text_to_image": {...}, "num_images",
    "num_texts"}`` in percent.

    ``shard`` (e.g. ``Shard.from_accelerate()`` under torchrun): the processes split the
    image and text batches and every process returns the one-process result. ``workers`` and
    ``precision`` as in :func:`~hyvl.evaluation.evaluate_zeroshot`."""
    shard = shard or Shard()
    was_training = model.training
    model.eval()
    try:
        if str(data).endswith(".json"):
            paths, texts, owner = load_coco(data, image_root)
            files = ImageFiles([(p, 0) for p in paths], preprocess)
            batches, total = shard.share(files, batch_size, workers)
            image_emb, labels = embed_images(
                model, batches, total, shard=shard, precision=precision
            )
            image_emb, _, kept, skipped = drop_skipped(image_emb, labels)
            # the captions of a skipped image go with it; the others point at the kept rows
            new_row = (torch.cumsum(kept.long(), 0) - 1).tolist()
            texts_kept = [t for t, i in enumerate(owner) if kept[i]]
            texts = [texts[t] for t in texts_kept]
            owner = [new_row[owner[t]] for t in texts_kept]
            text_emb = embed_texts(model, tokenizer, texts, shard=shard, precision=precision)
            keys = [" ".join(t.lower().split()) for t in texts]
        else:
            image_emb, text_emb, tokens, skipped = _embed_shards(
                model, tokenizer, data, batch_size, shard, workers, precision
            )
            owner = list(range(image_emb.shape[0]))
            keys = [tuple(row.tolist()) for row in tokens]
    finally:
        model.train(was_training)
    if image_emb.shape[0] == 0:
        raise DataError(f"{data}: no usable image-text pairs (skipped: {skipped or 'none'})")
    return {**retrieval_metrics(image_emb, text_emb, owner, model, keys), "skipped": skipped}


def _embed_shards(
    model, tokenizer, data, batch_size: int, shard: Shard, workers: int, precision: str
):
    """Images, their captions and the caption tokens from shards, in the same rows."""
    from hyvl.data.pipeline import build_eval_loader
    from hyvl.evaluation.embed import encoding, progress

    device = next(model.parameters()).device
    loader = build_eval_loader(
        str(data),
        batch_size=batch_size,
        image_size=model.image_size,
        tokenizer=tokenizer,
        rank=shard.rank,
        world=shard.world,
        workers=workers if shard.world == 1 else 0,
    )
    images, texts, tokens = [], [], []
    for b in progress(loader, None, "embedding image-text pairs", shard):
        with encoding(model, precision):
            images.append((b.index, model.encode_image(b.images.to(device)).float().cpu(), None))
            texts.append((b.index, model.encode_text(b.tokens.to(device)).float().cpu(), None))
        tokens.append((b.index, b.tokens.cpu(), None))
    skipped = gather_counts(shard, loader.skipped())
    return shard.gather(images)[0], shard.gather(texts)[0], shard.gather(tokens)[0], skipped
