"""Image and text towers: timm ViTs, open_clip's CLIP text transformer, optional HF text models.

Each tower maps its input to pooled features of width ``tower.width``; the model's projection
takes it from there. Nothing here downloads: ``VisionConfig.pretrained`` and
``TextConfig.hf_name`` are read from local paths (or from the hub when the user is online and
asks for a hub name, through the libraries' own loaders).
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import torch
from torch import nn

from hyvl.config import TextConfig, VisionConfig
from hyvl.errors import CheckpointError, ConfigError

# MERU / HyCoCLIP's ViT-S/16 from MoCo v3 (Chen et al. 2021): timm has no entry under this name,
# so it is built from timm's VisionTransformer with MoCo v3's choices.
MOCOV3_VIT_S = "vit_small_mocov3_patch16_224"


def mocov3_sincos_2d(
    grid_h: int, grid_w: int, dim: int, temperature: float = 10000.0
) -> torch.Tensor:
    """MoCo v3's fixed 2-D sin-cos position embedding, (grid_h * grid_w, dim).

    Written out rather than taken from timm: timm's builder orders the sin/cos blocks and the
    axes differently, and MERU / HyCoCLIP checkpoints carry MoCo v3's exact table. For patch
    ``m = i * grid_w + j`` (row-major, as timm's patch tokens) the row is
    ``[sin(i w), cos(i w), sin(j w), cos(j w)]`` with ``w_k = temperature^(-k / (dim/4))``.
    """
    if dim % 4:
        raise ConfigError(f"a 2-D sin-cos position embedding needs width % 4 == 0, got {dim}")
    quarter = dim // 4
    omega = 1.0 / temperature ** (torch.arange(quarter, dtype=torch.float32) / quarter)
    rows, cols = torch.meshgrid(
        torch.arange(grid_h, dtype=torch.float32),
        torch.arange(grid_w, dtype=torch.float32),
        indexing="ij",
    )
    out_i = rows.flatten()[:, None] * omega[None]
    out_j = cols.flatten()[:, None] * omega[None]
    return torch.cat([out_i.sin(), out_i.cos(), out_j.sin(), out_j.cos()], dim=1)


class ImageTower(nn.Module):
    """A timm ViT without its classifier head: images (B,3,H,W) normalised -> (B, width)."""

    def __init__(self, cfg: VisionConfig):
        super().__init__()
        import timm

        kwargs = dict(cfg.timm_kwargs)
        kwargs.update(num_classes=0, img_size=cfg.image_size, drop_path_rate=cfg.drop_path_rate)
        for key, value in (
            ("patch_size", cfg.patch_size),
            ("embed_dim", cfg.width),
            ("depth", cfg.depth),
            ("num_heads", cfg.heads),
            ("mlp_ratio", cfg.mlp_ratio),
        ):
            if value is not None:
                kwargs[key] = value
        if cfg.ln_eps is not None:
            kwargs["norm_layer"] = partial(nn.LayerNorm, eps=cfg.ln_eps)
        if cfg.timm_name == MOCOV3_VIT_S:
            from timm.models.vision_transformer import VisionTransformer

            # MoCo v3's ViT-S: 12 heads (not timm's 6), CLS pooling, LayerNorm eps 1e-5.
            arch = dict(
                patch_size=16,
                embed_dim=384,
                depth=12,
                num_heads=12,
                mlp_ratio=4.0,
                norm_layer=partial(nn.LayerNorm, eps=1e-5),
                global_pool="token",
            )
            arch.update(kwargs)
            self.vit = VisionTransformer(**arch)
        else:
            try:
                self.vit = timm.create_model(cfg.timm_name, pretrained=False, **kwargs)
            except RuntimeError as err:  # timm: "Unknown model (...)"
                raise ConfigError(f"model.vision.timm_name={cfg.timm_name!r}: {err}") from err
        if cfg.sincos_pos_embed or cfg.timm_name == MOCOV3_VIT_S:
            self._fix_sincos_pos_embed()
        if cfg.pretrained:
            self.load_local_weights(cfg.pretrained)
        self.width = self.vit.num_features

    def _fix_sincos_pos_embed(self) -> None:
        vit = self.vit
        grid_h, grid_w = vit.patch_embed.grid_size
        table = mocov3_sincos_2d(grid_h, grid_w, vit.embed_dim)
        extra = vit.pos_embed.shape[1] - table.shape[0]  # prefix tokens (CLS) get zeros
        table = torch.cat([torch.zeros(extra, vit.embed_dim), table])
        vit.pos_embed.data.copy_(table.unsqueeze(0))
        vit.pos_embed.requires_grad_(False)

    def load_local_weights(self, path: str) -> None:
        """Initialise the tower from a local timm state dict (.safetensors or .pth/.bin)."""
        from hyvl.models.weights import read_state_dict

        state = read_state_dict(Path(path))
        state = {k: v for k, v in state.items() if not k.startswith("head.")}
        missing, unexpected = self.vit.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise CheckpointError(
                f"{path}: not a state dict of this timm tower; missing {missing[:5]}, "
                f"unexpected {unexpected[:5]}"
            )

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.vit.set_grad_checkpointing(enable)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.vit(images)


class OpenCLIPTextTower(nn.Module):
    """open_clip's CLIP text transformer (causal, EOS pooling by argmax token): (B,L) -> (B,width)."""

    def __init__(self, cfg: TextConfig):
        super().__init__()
        from open_clip.transformer import QuickGELU, TextTransformer

        self.transformer = TextTransformer(
            context_length=cfg.context_length,
            vocab_size=cfg.vocab_size,
            width=cfg.width,
            heads=cfg.heads,
            layers=cfg.layers,
            mlp_ratio=cfg.mlp_ratio,
            output_dim=None,  # the model owns the projection (bias-free, MERU's init)
            pool_type="argmax",  # CLIP's BPE gives EOT the largest id, so argmax finds it
            **({"act_layer": QuickGELU} if cfg.quick_gelu else {}),
        )
        self.width = cfg.width

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.transformer.set_grad_checkpointing(enable)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.transformer(tokens)


class HFTextTower(nn.Module):
    """A Hugging Face encoder (BERT, RoBERTa, ...) pooled by CLS, mean or EOS token."""

    def __init__(self, cfg: TextConfig):
        super().__init__()
        from transformers import AutoModel

        if not cfg.hf_name:
            raise ConfigError("model.text.kind=hf needs model.text.hf_name (a local directory)")
        try:
            self.transformer = AutoModel.from_pretrained(cfg.hf_name)
        except OSError as err:
            raise CheckpointError(f"model.text.hf_name={cfg.hf_name!r}: {err}") from err
        self.pooling = cfg.hf_pooling
        self.pad_id = self.transformer.config.pad_token_id or 0
        self.width = self.transformer.config.hidden_size

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        if enable:
            self.transformer.gradient_checkpointing_enable()
        else:
            self.transformer.gradient_checkpointing_disable()

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        mask = (tokens != self.pad_id).long()
        mask[:, 0] = 1  # the first token (CLS / BOS) is always real, even if it equals pad
        hidden = self.transformer(input_ids=tokens, attention_mask=mask).last_hidden_state
        if self.pooling == "cls":
            return hidden[:, 0]
        if self.pooling == "mean":
            m = mask.unsqueeze(-1).to(hidden.dtype)
            return (hidden * m).sum(1) / m.sum(1).clamp_min(1)
        last = mask.sum(1) - 1  # eos: the last non-pad token
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]


def build_text_tower(cfg: TextConfig) -> nn.Module:
    if cfg.kind == "hf":
        return HFTextTower(cfg)
    return OpenCLIPTextTower(cfg)
