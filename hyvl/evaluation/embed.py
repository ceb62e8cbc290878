"""Embedding datasets once, batched, with a progress bar; scores in fp32."""

from __future__ import annotations

from collections.abc import Iterable

import torch

from hyvl import lorentz


@torch.no_grad()
def embed_images(model, batches: Iterable, total: int | None = None, desc: str = "images"):
    """Embed an iterable of ``(images, labels)`` or image tensors -> ((N, D) fp32, labels|None)."""
    from tqdm.auto import tqdm

    feats, labels = [], []
    device = next(model.parameters()).device
    for item in tqdm(batches, total=total, desc=f"embedding {desc}", leave=False):
        images, y = item if isinstance(item, (tuple, list)) else (item, None)
        feats.append(model.encode_image(images.to(device)).float().cpu())
        if y is not None:
            labels.append(torch.as_tensor(y))
    return torch.cat(feats), (torch.cat(labels) if labels else None)


@torch.no_grad()
def embed_texts(model, tokenizer, texts: list[str], batch_size: int = 256, desc: str = "texts"):
    """(N, D) fp32 embeddings of ``texts``."""
    from tqdm.auto import tqdm

    device = next(model.parameters()).device
    out = []
    for i in tqdm(range(0, len(texts), batch_size), desc=f"embedding {desc}", leave=False):
        out.append(model.encode_text(tokenizer(texts[i : i + batch_size]).to(device)).float().cpu())
    return torch.cat(out)


def similarity(model, queries: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
    """(Q, N) scores, higher = closer: -Lorentz distance, or cosine for CLIP."""
    if model.geometry == "lorentz":
        return -lorentz.pairwise_dist(queries.float(), items.float(), model.curv.detach().float())
    return queries.float() @ items.float().T
