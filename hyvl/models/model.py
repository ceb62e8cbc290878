"""One model for CLIP, MERU and HyCoCLIP: two towers, projections, and a lift into the geometry.

``geometry="lorentz"`` (MERU, HyCoCLIP): projected features are scaled by a learnable alpha per
modality and lifted with ``exp_map0`` onto the hyperboloid of learnable curvature ``-c``.
``geometry="euclidean"`` (CLIP): projected features are L2-normalised. Losses live in
``hyvl.objectives``; the model only produces :class:`Embeddings`. What differs per geometry is
in ``model.space`` (:mod:`hyvl.geometry`).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from hyvl import lorentz
from hyvl.config import ModelConfig
from hyvl.errors import ConfigError
from hyvl.geometry import get_geometry
from hyvl.models.embeddings import Embeddings, text_identity
from hyvl.models.towers import ImageTower, build_text_tower

__all__ = ["Embeddings", "HyvlModel"]


class HyvlModel(nn.Module):
    """Image and text towers with projections into a shared Lorentz or Euclidean space.

    Images enter in [0, 1], (B, 3, H, W); they are normalised inside with the stored
    ``pixel_mean`` / ``pixel_std`` buffers. Tokens are (B, L) long tensors from
    :func:`hyvl.get_tokenizer`.

    ``logit_scale`` is the LOG of the contrastive temperature, as open_clip and MERU store it
    (init ``log(1/0.07)``); ``logit_scale_exp`` is the multiplier the losses use.

    Bounded scalars (log curvature within ``[log c0/10, log 10 c0]``, log alphas ``<= 0``,
    ``logit_scale <= log logit_scale_max``) are kept in bounds by clamping the PARAMETERS in
    place (:meth:`clamp_scalars_`), not inside the computation: a clamp in the computation
    has zero gradient once its input is at or past the bound, so a scalar that touched its
    bound could never come back. ``hyvl train`` clamps after every optimizer step; a model
    is clamped when weights are loaded into it; in eval mode the properties clamp as well,
    so whatever was written into the parameters, what the losses see stays in bounds.
    ``normalize_inside`` (default True) says whether the model normalises its input; it is
    False for models from ``hyvl.create_model_and_transforms(..., normalize=True)``, whose
    preprocess ends with ``Normalize`` as open_clip's does.
    """

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.geometry = config.geometry
        self.space = get_geometry(config.geometry)  # lift, similarity, prototypes, search, cones
        self.visual = ImageTower(config.vision)
        self.textual = build_text_tower(config.text)
        d = config.embed_dim
        self.visual_proj = nn.Linear(self.visual.width, d, bias=False)
        self.textual_proj = nn.Linear(self.textual.width, d, bias=False)
        # MERU's init: std = width^-0.5 for both projections.
        nn.init.normal_(self.visual_proj.weight, std=self.visual.width**-0.5)
        nn.init.normal_(self.textual_proj.weight, std=self.textual.width**-0.5)

        self.register_buffer("pixel_mean", torch.tensor(config.pixel_mean).view(1, 3, 1, 1))
        self.register_buffer("pixel_std", torch.tensor(config.pixel_std).view(1, 3, 1, 1))

        self.normalize_inside = True
        # CLIP: temperature stored as a log (open_clip's and MERU's name and meaning), init
        # 1/0.07, clamped at logit_scale_max when exponentiated.
        self.logit_scale = nn.Parameter(torch.tensor(math.log(config.logit_scale_init)))
        self._log_logit_scale_max = math.log(config.logit_scale_max)
        # Exports and training checkpoints written before the rename call it log_logit_scale.
        self._register_load_state_dict_pre_hook(_rename_log_logit_scale)
        # Loaded weights may hold a scalar past its bound (written before hyvl clamped in
        # place, or by MERU, whose last step follows its last clamp): clamp them on load.
        self.register_load_state_dict_post_hook(_clamp_after_load)
        if self.space.hyperbolic:
            # MERU Sec. 3.2: alpha per modality, init embed_dim^-0.5 (log stored, <= 0) so that
            # initial embeddings have norm ~1 whatever the width.
            # PHyCLIP (its authors' code): one curvature per Lorentz factor and one alpha per
            # factor and modality, init factor_dim^-0.5, each bounded as MERU's.
            shape: tuple[int, ...] = ()
            width = d
            if self.space.product:
                if d % config.factor_dim:
                    raise ConfigError(
                        f"model.embed_dim={d} is not a multiple of model.factor_dim="
                        f"{config.factor_dim} (a lorentz_product model splits the embedding "
                        "into factors of that size)"
                    )
                shape, width = (d // config.factor_dim,), config.factor_dim
            alpha = torch.full(shape, float(width) ** -0.5).log()
            self.visual_alpha = nn.Parameter(alpha.clone(), requires_grad=config.learn_alpha)
            self.textual_alpha = nn.Parameter(alpha.clone(), requires_grad=config.learn_alpha)
            # MERU: log c, init log c0, clamped to [c0/10, 10 c0] so training cannot collapse it.
            c0 = config.curv_init
            self.log_curv = nn.Parameter(
                torch.full(shape, math.log(c0)), requires_grad=config.learn_curv
            )
            self._log_curv_bounds = (math.log(c0 / 10), math.log(c0 * 10))
        # model.init's report (hyvl.models.init; create_model fills it when a source is named)
        self.init_report = None
        if config.grad_checkpointing:
            self.set_grad_checkpointing(True)

    # ----------------------------------------------------------------- properties
    @property
    def image_size(self) -> int:
        return self.config.vision.image_size

    @property
    def context_length(self) -> int:
        return self.config.text.context_length

    @property
    def curv(self) -> torch.Tensor | None:
        """Positive curvature magnitude c (0-dim tensor), or None for CLIP.

        Training mode: ``exp(log_curv)`` as stored (kept in bounds by :meth:`clamp_scalars_`,
        so its gradient never vanishes at a bound); eval mode: clamped to ``[c0/10, 10 c0]``.
        """
        if not self.space.hyperbolic:
            return None
        if self.training:
            return self.log_curv.exp()
        return self.log_curv.clamp(*self._log_curv_bounds).exp()

    @property
    def logit_scale_exp(self) -> torch.Tensor:
        """The multiplier of the logits, ``exp(logit_scale)`` (at most logit_scale_max; see
        :attr:`curv` for training vs eval mode)."""
        if self.training:
            return self.logit_scale.exp()
        return self.logit_scale.clamp(max=self._log_logit_scale_max).exp()

    def log_alpha(self, modality: str) -> torch.Tensor | None:
        """``visual_alpha`` or ``textual_alpha`` (log, ``<= 0``; clamped in eval mode), None
        for CLIP."""
        value = getattr(self, f"{modality}_alpha", None)
        if value is None or self.training:
            return value
        return value.clamp(max=0.0)

    @torch.no_grad()
    def clamp_scalars_(self) -> None:
        """Clamp curvature, alphas and logit scale IN PLACE to their bounds (no gradient).

        Where the two reference trainers do it: MERU (``meru/models.py``, ``MERU.forward``)
        clamps ``curv``, both alphas and ``logit_scale`` through ``.data`` at the start of every
        training forward; open_clip (``open_clip_train/train.py``, ``train_one_epoch``) clamps
        ``logit_scale`` under ``torch.no_grad()`` right after ``optimizer.step()``. hyvl
        follows open_clip's place (after each step): the forward stays free of parameter
        writes (torch.compile, FSDP's gathered copies), the checkpoint written after a step
        holds in-bound values, and under DDP every process applies the same clamp to the same
        replica; under FSDP each process clamps its own shard (an empty view where it holds
        none of a scalar). In your own loop: call it after ``optimizer.step()``.
        """
        self.logit_scale.clamp_(max=self._log_logit_scale_max)
        if self.space.hyperbolic:
            self.log_curv.clamp_(*self._log_curv_bounds)
            self.visual_alpha.clamp_(max=0.0)
            self.textual_alpha.clamp_(max=0.0)

    @property
    def log_logit_scale(self) -> nn.Parameter:
        """The parameter's earlier name (same tensor, same meaning: the log)."""
        return self.logit_scale

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.visual.set_grad_checkpointing(enable)
        self.textual.set_grad_checkpointing(enable)

    # ----------------------------------------------------------------- features
    def image_features(self, images: torch.Tensor) -> torch.Tensor:
        """(B,3,H,W) in [0,1] -> (B, D) projected features, before alpha / exp_map0 / norm."""
        if self.normalize_inside:
            if not self.training and images.numel() and images.min() < -1e-3:
                # Pixels in [0, 1] are never negative; normalised ones are (anything darker
                # than the mean). Normalising twice would silently shift every embedding.
                raise ValueError(
                    f"images look normalised already (min {images.min().item():.2f} < 0), but "
                    "this model normalises its input: use hyvl's preprocess (no Normalize), or "
                    "hyvl.create_model_and_transforms(..., normalize=True) for open_clip-style "
                    "normalised preprocessing"
                )
            images = (images - self.pixel_mean) / self.pixel_std
        return self.visual_proj(self.visual(images))

    def text_features(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, L) tokens -> (B, D) projected features, before alpha / exp_map0 / norm."""
        return self.textual_proj(self.textual(tokens))

    def _lift(self, feats: torch.Tensor, log_alpha: torch.Tensor | None) -> torch.Tensor:
        # The lift runs in fp32 whatever autocast says: exp_map0's sinh overflows in fp16 and
        # loses the small-norm regime in bf16.
        with torch.autocast(feats.device.type, enabled=False):
            return self.space.lift(feats.float(), log_alpha, self.curv)

    def lift_image(self, feats: torch.Tensor) -> torch.Tensor:
        """(B, D) image features -> embeddings (space components, or unit vectors for CLIP)."""
        return self._lift(feats, self.log_alpha("visual"))

    def lift_text(self, feats: torch.Tensor) -> torch.Tensor:
        """(B, D) text features -> embeddings (space components, or unit vectors for CLIP)."""
        return self._lift(feats, self.log_alpha("textual"))

    def pairwise_score(self, image_emb: torch.Tensor, text_emb: torch.Tensor) -> torch.Tensor:
        """(I, D) image and (T, D) text embeddings -> (I, T) fp32 scores, larger = closer.

        ``config.score == "distance"``: the geometry's similarity (``-d(x, y)``; cosine for
        CLIP). ``"atmg_angle"``: ``oxy_angle(image_i, text_j)``, the exterior angle at the image
        (ATMG's image -> text logit before the scale, and its authors' zero-shot score,
        samgregoost/atmg atmg/evaluation/classification.py).
        """
        curv = None if self.curv is None else self.curv.detach().float()
        if self.config.score == "atmg_angle":
            return lorentz.pairwise_oxy_angle(image_emb.float(), text_emb.float(), curv)
        return self.space.pairwise_similarity(image_emb.float(), text_emb.float(), curv)

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """(B,3,H,W) in [0,1] -> (B, D) fp32 embeddings."""
        return self.lift_image(self.image_features(images))

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, L) tokens -> (B, D) fp32 embeddings."""
        return self.lift_text(self.text_features(tokens))

    # ----------------------------------------------------------------- training forward
    def forward(
        self,
        images: torch.Tensor,
        tokens: torch.Tensor,
        box_images: torch.Tensor | None = None,
        box_tokens: torch.Tensor | None = None,
        box_towers: str = "fused",
    ) -> Embeddings:
        """Embed a batch: images, texts and optional box crops and box texts.

        images (B,3,H,W), tokens (B,L); box_images (B*k,3,H,W) and box_tokens (B*k,L) optional,
        sample-major. Returns :class:`Embeddings` with (B, D) and (B*k, D) fp32 embeddings.

        ``box_towers`` (the trainer passes ``train.box_towers``; a call argument, not model
        state): ``"fused"`` (default) embeds whole and box images in ONE tower call (as
        texts and box texts): on a GPU one larger call fills the device better and halves the kernel
        launches. ``"split"`` makes two calls, ``"auto"`` fuses on CUDA and splits elsewhere.
        The results are the same up to rounding. On 2 CPU cores two calls on B rows were
        measured 3-9% faster than one on 2B (``tools/bench.py``, ``split_over_fused``).
        """
        if box_towers not in ("auto", "fused", "split"):
            raise ValueError(f"box_towers must be 'auto', 'fused' or 'split', got {box_towers!r}")
        fused = box_towers == "fused" or (box_towers == "auto" and images.device.type == "cuda")
        if fused:
            b = images.shape[0]
            image = self.encode_image(
                images if box_images is None else torch.cat([images, box_images])
            )
            text = self.encode_text(
                tokens if box_tokens is None else torch.cat([tokens, box_tokens])
            )
            image, box_image = image[:b], (image[b:] if box_images is not None else None)
            text, box_text = text[:b], (text[b:] if box_tokens is not None else None)
        else:
            image, text = self.encode_image(images), self.encode_text(tokens)
            box_image = None if box_images is None else self.encode_image(box_images)
            box_text = None if box_tokens is None else self.encode_text(box_tokens)
        return Embeddings(
            image=image,
            text=text,
            box_image=box_image,
            box_text=box_text,
            curv=self.curv,
            logit_scale=self.logit_scale_exp,
            box_text_ids=None if box_tokens is None else text_identity(box_tokens),
        )


def _clamp_after_load(module: HyvlModel, incompatible_keys) -> None:
    module.clamp_scalars_()


def _rename_log_logit_scale(state_dict, prefix, *args) -> None:
    old = prefix + "log_logit_scale"
    if old in state_dict:
        state_dict[prefix + "logit_scale"] = state_dict.pop(old)
