"""Tokenizers: open_clip's CLIP BPE (shipped inside open_clip_torch, never downloaded) or HF."""

from __future__ import annotations

import functools

import torch

from hyvl.config import TextConfig


class HFTokenizer:
    """Wraps a Hugging Face tokenizer to the CLIP call: list[str] -> LongTensor (B, L)."""

    def __init__(self, name: str, context_length: int):
        from transformers import AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(name)
        self.context_length = context_length

    def __call__(self, texts: list[str] | str) -> torch.Tensor:
        if isinstance(texts, str):
            texts = [texts]
        out = self.tokenizer(
            list(texts),
            padding="max_length",
            truncation=True,
            max_length=self.context_length,
            return_tensors="pt",
        )
        return out["input_ids"].long()


def get_tokenizer(cfg: TextConfig):
    """A callable ``tokenizer(list[str]) -> LongTensor (B, cfg.context_length)``.

    The CLIP tokenizer truncates long texts and keeps the end-of-text token last, as
    open_clip does, so EOS pooling always finds it.
    """
    if cfg.kind == "hf":
        return HFTokenizer(cfg.hf_name, cfg.context_length)
    return _clip_tokenizer(cfg.context_length)


@functools.lru_cache(maxsize=8)
def _clip_tokenizer(context_length: int):
    # Building the BPE tables takes ~0.1-1 s; the tokenizer holds no per-call state beyond a
    # word cache, so every load / get_tokenizer of the same context length shares one.
    from open_clip.tokenizer import SimpleTokenizer

    return SimpleTokenizer(context_length=context_length)
