"""Typed configuration: YAML files and dotted ``key=value`` overrides, validated by pydantic.

Each section is a pydantic model whose fields carry their type, default, range and a one-line
help (``hyvl config keys`` prints them). What this module adds to pydantic is the part users
see: an unknown key is an error naming the key and the nearest valid one, so a typo
(``train.max_step=10``) fails at start instead of being ignored; every error is one line
naming the dotted key (:class:`~hyvl.errors.ConfigError`); numbers parse as users type them
(``1e-3``, which YAML 1.1 reads as a string); and a run config is checked as one recipe
(model family, objective and box crops agree). The machinery under the sections (one-line
errors, overrides, YAML) is :mod:`hyvl.config_base`.

Every numeric default taken from a paper names its source once, here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BeforeValidator, Field, model_validator

from hyvl.config_base import (
    Float,
    Int,
    Section,
    apply_overrides,
    field_row,
    from_dict,
    load_yaml,
    parse_override,
    section_class,
    to_dict,
)
from hyvl.config_recipe import DEFAULT_GEOMETRY, FAMILIES, Family, check_recipe, model_family
from hyvl.errors import ConfigError

__all__ = [
    "DEFAULT_MODEL", "FAMILIES", "IMAGENET_MEAN", "IMAGENET_STD", "DataConfig", "EvalConfig",
    "Family", "LoraConfig", "ModelConfig", "ObjectiveConfig", "RunConfig", "Section", "TextConfig",
    "TrainConfig", "VisionConfig", "apply_overrides", "fields_table",
    "from_dict", "load_run_config", "load_yaml", "model_family", "parse_override", "to_dict",
]  # fmt: skip


def _precision(value: Any) -> Any:
    """accelerate spells full precision ``no``, which YAML 1.1 reads as False: both mean fp32."""
    return "fp32" if value is False or value == "no" else value


def _no_clip(value: Any) -> Any:
    """``grad_clip: null`` switches clipping off, as 0 does."""
    return 0.0 if value is None else value


Precision = Annotated[Literal["fp32", "bf16", "fp16"], BeforeValidator(_precision)]

# --------------------------------------------------------------------------------------
# Model
# --------------------------------------------------------------------------------------

# ImageNet statistics, used by MERU and HyCoCLIP for their timm ViTs.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class VisionConfig(Section):
    """Image tower: any timm ViT by name, with optional architecture overrides."""

    where: ClassVar[str] = "model.vision"
    timm_name: str = Field("vit_small_mocov3_patch16_224", description="timm model name")
    image_size: Int = Field(224, gt=0, description="input image side in pixels")
    # Architecture overrides passed to timm (None = the named model's own value).
    patch_size: Int | None = Field(None, gt=0, description="ViT patch size (null: timm's)")
    width: Int | None = Field(None, gt=0, description="ViT width (null: timm's)")
    depth: Int | None = Field(None, gt=0, description="ViT depth (null: timm's)")
    heads: Int | None = Field(None, gt=0, description="attention heads (null: timm's)")
    mlp_ratio: Float | None = Field(None, gt=0, description="MLP ratio (null: timm's)")
    pretrained: str | None = Field(
        None, description="local file of timm weights for the tower (never downloaded)"
    )
    drop_path_rate: Float = Field(0.0, ge=0, lt=1, description="stochastic depth rate")
    timm_kwargs: dict = Field(default_factory=dict, description="extra timm.create_model kwargs")
    # MERU / HyCoCLIP build every ViT with LayerNorm eps 1e-5 (timm: 1e-6).
    ln_eps: Float | None = Field(None, gt=0, description="LayerNorm eps (null: timm's 1e-6)")
    # Fixed 2-D sin-cos position embedding of MoCo v3 (Chen et al. 2021), which MERU / HyCoCLIP
    # use for every ViT.
    sincos_pos_embed: bool = Field(
        False, description="frozen 2-D sin-cos position embedding instead of a learned one"
    )


class TextConfig(Section):
    """Text tower: the CLIP text transformer (open_clip) or a Hugging Face model."""

    where: ClassVar[str] = "model.text"
    kind: Literal["openclip", "hf"] = Field(
        "openclip", description="CLIP text transformer (openclip) or a Hugging Face model (hf)"
    )
    # CLIP text transformer (Radford et al. 2021): vocab 49408, context 77, width 512,
    # 12 layers, 8 heads, causal mask, EOS (argmax token) pooling.
    context_length: Int = Field(77, gt=0, description="tokens per text")
    vocab_size: Int = Field(49408, gt=0, description="tokenizer vocabulary size")
    width: Int = Field(512, gt=0, description="transformer width")
    layers: Int = Field(12, gt=0, description="transformer layers")
    heads: Int = Field(8, gt=0, description="attention heads")
    mlp_ratio: Float = Field(4.0, gt=0, description="MLP ratio")
    hf_name: str | None = Field(
        None, description="Hugging Face text model: a local directory or hub name (kind=hf)"
    )
    hf_pooling: Literal["cls", "mean", "eos"] = Field(
        "cls", description="how a Hugging Face tower pools tokens"
    )
    # OpenAI's CLIP weights need QuickGELU (open_clip's "-quickgelu" models).
    quick_gelu: bool = Field(False, description="QuickGELU activations")


class ModelConfig(Section):
    """A model: geometry, embedding size, the two towers and the learnable scalars."""

    where: ClassVar[str] = "model"
    name: str = Field("custom", description="a label (the registered name for named models)")
    geometry: Literal["lorentz", "euclidean", "lorentz_product"] = Field(
        DEFAULT_GEOMETRY,
        description="hyperboloid (MERU / HyCoCLIP), unit sphere (CLIP) or a product of "
        "hyperboloids (PHyCLIP)",
    )
    embed_dim: Int = Field(512, gt=0, description="embedding dimension")
    # PHyCLIP (tksmatsubara/PHyCLIP configs/train_phyclip_vit_l.py): subspace_dim=8,
    # so a 512-d embedding is 64 Lorentz factors, each with its own curvature and alphas.
    factor_dim: Int = Field(
        8, gt=0, description="lorentz_product: dimension of each Lorentz factor (embed_dim / F)"
    )
    vision: VisionConfig = Field(default_factory=VisionConfig, description="image tower")
    text: TextConfig = Field(default_factory=TextConfig, description="text tower")
    # MERU (Desai et al. 2023), Sec. 3: curvature init c0 = 1, learnable, clamped to [c0/10, 10 c0].
    curv_init: Float = Field(1.0, gt=0, description="initial curvature c0")
    learn_curv: bool = Field(True, description="learn the curvature (clamped to [c0/10, 10 c0])")
    # MERU: learnable scalar alpha per modality, init embed_dim^-0.5, stored as log, clamped <= 0.
    learn_alpha: bool = Field(
        True, description="learn the per-modality scale alpha before the lift"
    )
    # CLIP (Radford et al. 2021): logit scale init 1/0.07, clamped at 100.
    logit_scale_init: Float = Field(1 / 0.07, gt=0, description="initial logit scale (not the log)")
    logit_scale_max: Float = Field(100.0, gt=0, description="logit scale clamp")
    pixel_mean: tuple[Float, Float, Float] = Field(
        IMAGENET_MEAN, description="per-channel mean, subtracted inside the model"
    )
    pixel_std: tuple[
        Annotated[Float, Field(gt=0)], Annotated[Float, Field(gt=0)], Annotated[Float, Field(gt=0)]
    ] = Field(IMAGENET_STD, description="per-channel std, divided inside the model")
    grad_checkpointing: bool = Field(False, description="activation checkpointing in the towers")
    # ATMG (samgregoost/atmg atmg/evaluation/classification.py and retrieval.py) scores its
    # models by the exterior angle at the image, the quantity it trains (its image -> text
    # logits), not by the distance, which its loss never sees.
    score: Literal["distance", "atmg_angle"] = Field(
        "distance",
        description="how evaluation scores an image against a text (larger = closer): "
        "'distance' (-Lorentz distance; cosine for CLIP) or 'atmg_angle' (ATMG's "
        "+oxy_angle(image, text), the image the apex; one hyperboloid only)",
    )
    # Hyperbolic fine-tuning of a pretrained CLIP: both towers, projections and the logit scale
    # (hyvl.models.init). Only read when the model is built; exports store the weights and
    # drop the source.
    init: str | None = Field(
        None,
        description="where the towers start: open_clip NAME:TAG or hf-hub:ORG/NAME, an open_clip "
        "checkpoint, a Hugging Face CLIP folder, a hyvl export or a MERU / HyCoCLIP .pth",
    )
    openclip_init: str | None = Field(
        None, description="older name of model.init (a local open_clip CLIP state dict)"
    )

    @model_validator(mode="after")
    def _score_geometry(self) -> ModelConfig:
        if self.score != "atmg_angle":
            return self
        from hyvl.geometry import get_geometry  # torch, only for this case

        space = get_geometry(self.geometry)
        if not space.hyperbolic or space.product:
            raise ConfigError(
                f"model.score='atmg_angle' is ATMG's exterior angle on one hyperboloid, which "
                f"model.geometry={self.geometry!r} is not: use model.score='distance'"
            )
        return self


# --------------------------------------------------------------------------------------
# Objective
# --------------------------------------------------------------------------------------


class ObjectiveConfig(Section):
    """Which loss terms, with which weights. ``kind`` picks the paper's recipe."""

    where: ClassVar[str] = "objective"
    kind: Literal["clip", "meru", "hycoclip", "uncha", "phyclip", "atmg"] = Field(
        "meru", description="loss recipe; defaults to the model's family"
    )
    # "angle": the exterior angle of ATMG (Ramasinghe et al. 2024).
    logits: Literal["distance", "angle"] = Field(
        "distance", description="logits from -distance, or -exterior angle (lorentz only)"
    )
    # "sigmoid": pairwise sigmoid of SigLIP (Zhai et al. 2023).
    loss: Literal["softmax", "sigmoid"] = Field(
        "softmax", description="symmetric InfoNCE (softmax) or pairwise sigmoid"
    )
    # MERU Sec. 3.3 and HyCoCLIP Sec. 3: entailment weight 0.2.
    entail_weight: Float = Field(0.2, ge=0, description="weight of the entailment term(s)")
    # HyCoCLIP Sec. 3.2: aperture scale k = 0.7 for inter-modality (text->image, box text->box
    # image) and k = 1.2 for intra-modality (box image->image, box text->text); the four terms
    # are summed and halved (0.5) before the weight.
    inter_aperture_scale: Float = Field(
        0.7, gt=0, description="HyCoCLIP cone aperture scale, text->image terms"
    )
    intra_aperture_scale: Float = Field(
        1.2, gt=0, description="HyCoCLIP cone aperture scale, box->whole terms"
    )
    hycoclip_entail_factor: Float = Field(
        0.5, ge=0, description="HyCoCLIP factor on the sum of its four entailment terms"
    )
    # MERU Eq. 9: half-aperture constant K = 0.1.
    min_radius: Float = Field(0.1, gt=0, description="half-aperture constant K (MERU Eq. 9)")
    # SigLIP init: logit bias -10.
    sigmoid_bias_init: Float = Field(-10.0, description="initial logit bias (loss=sigmoid)")
    gather_with_grad: bool = Field(
        True, description="gather embeddings from all processes with gradients (global negatives)"
    )
    # Not in the papers (0 = their recipe: full weight from the first step): the entailment
    # weight ramps linearly from 0 to entail_weight over this many steps, so the contrastive
    # terms spread the embeddings out before the cones pull them in (docs/learning.md).
    entail_warmup_steps: Int = Field(
        0, ge=0, description="steps over which the entailment weight ramps up from 0 (0: off)"
    )
    # Not in the papers (0 = their recipe). Under AdamW a small weight does not make a term
    # weak: while the contrastive gradient is near zero (images a random tower cannot tell
    # apart yet) even a ramped-down entailment term steers every step and parks the cone apexes
    # inside the origin ball where each cone is a half-space, and the contrastive terms never
    # recover. The gate holds the entailment at 0 while the batch's contrastive loss is at
    # chance (ln N) and opens it linearly until the loss is this fraction below chance, so it
    # also closes again if the cones pull the run back towards chance (docs/learning.md).
    entail_gate: Float = Field(
        0.0,
        ge=0,
        lt=1,
        description="entailment only once the contrastive loss is below chance: its weight "
        "scales by clamp((1 - loss / ln N) / entail_gate, 0, 1) (0: off)",
    )
    # Not in CLIP, MERU or HyCoCLIP (0 = their objectives; UNCHA has such a pair of its own).
    # A scene's caption names all its objects, so a batch can be matched by how many objects a
    # scene holds without telling one object from another; each box crop against its own box
    # text asks for the object itself. Boxes with the same text are all positives of each other
    # (docs/learning.md, "Small objects").
    box_pair_weight: Float = Field(
        0.0,
        ge=0,
        description="weight of a box image <-> box text contrastive pair (boxes of the same "
        "text are positives of each other); > 0 loads box crops for any objective (0: off)",
    )
    # UNCHA (Kim et al. 2026; jeeit17/UNCHA models.py): the piecewise entailment adds 0.1 x the
    # angle inside the cone, the calibration term is weighted alpha = 10, and the box-box and
    # box-whole contrastive parts have their own learnable logit scales, init 1/0.05 and 1/0.06.
    uncha_angle_weight: Float = Field(
        0.1, ge=0, description="UNCHA: weight of the angle kept inside the cone (0.1)"
    )
    uncha_calibration_weight: Float = Field(
        10.0, ge=0, description="UNCHA: weight alpha of the uncertainty calibration (10)"
    )
    uncha_local_scale_init: Float = Field(
        20.0, gt=0, description="UNCHA: initial logit scale of box <-> box terms (1/0.05)"
    )
    uncha_global_local_scale_init: Float = Field(
        1 / 0.06, gt=0, description="UNCHA: initial logit scale of box -> whole terms (1/0.06)"
    )
    # Not in the papers (MERU fixes lambda = 0.2; its users asked for a learnable one,
    # facebookresearch/meru issue 7). Kendall, Gal & Cipolla (CVPR 2018)'s homoscedastic
    # weighting ``lambda * L_e - 0.5 * log(2 lambda)`` (lambda = 1 / (2 sigma^2)), lambda
    # stored as its log, initialised at entail_weight and clamped in place to
    # [entail_weight_min, entail_weight_max]: MERU's paper finds lambda in [0.01, 0.3] safe.
    learn_entail_weight: bool = Field(
        False,
        description="learn the entailment weight lambda (init entail_weight) by homoscedastic "
        "uncertainty weighting: lambda * entail - 0.5 * log(2 lambda), lambda clamped to "
        "[entail_weight_min, entail_weight_max] (false: the fixed entail_weight)",
    )
    entail_weight_min: Float = Field(
        0.01, gt=0, description="lower bound of the learned entailment weight (MERU: 0.01)"
    )
    entail_weight_max: Float = Field(
        0.3, gt=0, description="upper bound of the learned entailment weight (MERU: 0.3)"
    )
    # Memory, not maths: the loss is the same up to float summation order (tested).
    logit_chunk_rows: Int = Field(
        0,
        ge=0,
        description="form each logits block this many rows at a time and recompute it in "
        "backward: memory O(rows x columns) -> O(chunk x columns), more loss time (0: off)",
    )

    @model_validator(mode="after")
    def _learned_entail_weight(self) -> ObjectiveConfig:
        if not self.learn_entail_weight:
            return self
        if self.kind in ("clip", "atmg"):
            raise ConfigError(
                f"objective.learn_entail_weight=true: objective.kind={self.kind!r} has no "
                "entailment term; use kind meru, hycoclip, uncha or phyclip"
            )
        low, high = self.entail_weight_min, self.entail_weight_max
        if not low <= self.entail_weight <= high:
            raise ConfigError(
                "objective.learn_entail_weight=true needs objective.entail_weight_min <= "
                f"objective.entail_weight <= objective.entail_weight_max, got {low} <= "
                f"{self.entail_weight} <= {high}"
            )
        return self


# --------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------


class DataConfig(Section):
    """Training data: webdataset shards and how samples become batches."""

    where: ClassVar[str] = "data"
    train_shards: str | list[str] = Field(
        "", description="training shards: brace expansion, globs, paths, pipe: or http(s) URLs"
    )
    val_shards: str | list[str] = Field("", description="validation shards (same syntax)")
    layout: Literal["auto", "plain", "grit", "hycoclip", "grounded"] = Field(
        "auto", description="sample format of the shards (auto: detected per sample)"
    )
    resampled: bool = Field(True, description="endless seeded resampling of the shards")
    shuffle_buffer: Int = Field(1000, ge=0, description="samples in the shuffle buffer")
    workers: Int = Field(2, ge=0, description="data loader worker processes")
    # HyCoCLIP: one box per sample, chosen at random.
    boxes_per_sample: Int = Field(
        0, ge=0, description="box crops per sample; defaults from objective.kind (hycoclip: 1)"
    )
    # HyCoCLIP drops boxes smaller than 32x32 pixels.
    min_box_size: Int = Field(32, ge=0, description="drop boxes smaller than this many pixels")
    # MERU / HyCoCLIP: (0.5, 1.0).
    rrc_scale: tuple[Annotated[Float, Field(gt=0, le=1)], Annotated[Float, Field(gt=0, le=1)]] = (
        Field((0.5, 1.0), description="random resized crop area range (train)")
    )
    # Training JPEGs are decoded at the smallest DCT scale (1/2, 1/4, 1/8) whose shorter side is
    # >= decode_draft * image_size; box crops come from that decode (coordinates scaled). 1.0:
    # at least the training resolution (crops of scale >= 0.5 keep >= 0.61 of it); 1.64: no
    # crop of the whole image has fewer pixels than the output; 0: full-size decode (the same
    # pixels as before). PNG / WebP and evaluation are always decoded at full size.
    decode_draft: Float = Field(
        1.0,
        ge=0,
        description="JPEG draft decoding: shorter side >= this x image size (0: full size)",
    )
    skip_log_every: Int = Field(
        100,
        gt=0,
        description="seconds between two log lines about the same skip reason (counts are exact)",
    )

    @model_validator(mode="after")
    def _crop_range(self) -> DataConfig:
        if self.rrc_scale[0] > self.rrc_scale[1]:
            raise ConfigError(
                f"data.rrc_scale must be (low, high) with low <= high, got {self.rrc_scale}"
            )
        return self


# --------------------------------------------------------------------------------------
# Training and evaluation
# --------------------------------------------------------------------------------------


# Default LoRA targets: the attention and MLP linears of hyvl's towers. timm ViT blocks name
# them attn.qkv, attn.proj, mlp.fc1, mlp.fc2; open_clip's text blocks attn (an
# nn.MultiheadAttention, adapted whole by peft: q, k, v and output), mlp.c_fc, mlp.c_proj (not
# attn.out_proj alone: the attention's forward reads that weight past any adapter); Hugging
# Face BERT-like towers query, key, value, attention.output.dense, intermediate.dense,
# output.dense. Names that are not linears or attentions (timm's attn) are passed over.
LORA_TARGETS = (
    "attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2",
    "attn", "mlp.c_fc", "mlp.c_proj",
    "attention.self.query", "attention.self.key", "attention.self.value",
    "attention.output.dense", "intermediate.dense", "output.dense",
)  # fmt: skip


class LoraConfig(Section):
    """Low-rank adapters (peft) on the towers' linears; the lift stays fully trainable."""

    where: ClassVar[str] = "train.lora"
    # HySAC (aimagelab/HySAC) fine-tunes CLIP ViT-L/14 with rank 16; alpha = rank is peft's
    # usual scale of 1.
    rank: Int = Field(0, ge=0, description="adapter rank (0: no LoRA, the towers train fully)")
    alpha: Float = Field(16.0, gt=0, description="adapter scale numerator (scale = alpha / rank)")
    dropout: Float = Field(0.0, ge=0, lt=1, description="dropout on the adapters' input")
    targets: list[str] = Field(
        default_factory=lambda: list(LORA_TARGETS),
        description="linear layers to adapt: module names, or their last dotted parts "
        "(attention and MLP linears of timm ViTs, open_clip and BERT-like text towers)",
    )
    towers: list[Literal["visual", "textual"]] = Field(
        default_factory=lambda: ["visual", "textual"], description="towers that get adapters"
    )
    blocks: list[int] | None = Field(
        None,
        description="transformer block indices that get adapters (negative: from the "
        "end, [-2, -1] = the last two; null: all)",
    )


class TrainConfig(Section):
    """Optimisation, schedule, checkpoints, precision and processes."""

    where: ClassVar[str] = "train"
    max_steps: Int = Field(1000, gt=0, description="optimizer steps")
    batch_size: Int = Field(64, gt=0, description="global batch (summed over processes)")
    # MERU/HyCoCLIP recipe: AdamW lr 5e-4, betas (0.9, 0.98), weight decay 0.2 (norms, biases,
    # curvature, alphas and logit scale excluded), warmup, cosine to 0. Their 4000 warmup steps
    # belong to 120k-500k step runs; the default here is a tenth of the default max_steps.
    lr: Float = Field(5e-4, gt=0, description="peak learning rate (AdamW)")
    betas: tuple[Annotated[Float, Field(ge=0, lt=1)], Annotated[Float, Field(ge=0, lt=1)]] = Field(
        (0.9, 0.98), description="AdamW betas"
    )
    eps: Float = Field(1e-8, gt=0, description="AdamW eps")
    weight_decay: Float = Field(0.2, ge=0, description="AdamW weight decay on weight matrices")
    warmup_steps: Int = Field(100, ge=0, description="linear warmup steps before the cosine")
    min_lr: Float = Field(0.0, ge=0, description="learning rate at the end of the cosine")
    seed: Int = Field(0, ge=0, description="seed of weights, data order and augmentation")
    checkpoint_every: Int = Field(1000, gt=0, description="steps between checkpoints")
    keep_last: Int = Field(2, ge=0, description="checkpoints kept (0: all)")
    log_every: Int = Field(10, gt=0, description="steps between metrics.jsonl records")
    eval_every: Int = Field(0, ge=0, description="steps between evaluations (0: none)")
    mixed_precision: Precision = Field(
        "fp32", description="precision of the towers (accelerate's word 'no' means fp32)"
    )
    grad_accum: Int = Field(
        1, gt=0, description="GradCache chunks per step (same loss, less memory)"
    )
    grad_clip: Annotated[Float, BeforeValidator(_no_clip)] = Field(
        0.0, ge=0, description="clip the gradient norm at this value (0 or null: off)"
    )
    compile: bool = Field(False, description="torch.compile the model")
    fsdp: bool = Field(
        False,
        description="fully sharded data parallel: not supported with hyvl's models (an error: "
        "torch's FSDP refuses their 0-dim parameters); see docs/how-to/distributed.md",
    )
    cpu: bool = Field(False, description="train on CPU even when a GPU is present")
    # Which is faster depends on the device (split 2-70% faster on 2-core CPUs, fused expected
    # on GPUs): "auto" times both on the first batch (hyvl/train/box_towers.py).
    box_towers: Literal["auto", "fused", "split"] = Field(
        "auto",
        description="box crops / texts through the towers with the whole ones (fused) or alone "
        "(split); auto: the faster one here, timed at start and kept for resume",
    )
    max_nonfinite: Int = Field(
        10, gt=0, description="non-finite losses in a row (each step skipped) that stop the run"
    )
    allow_config_change: bool = Field(
        False,
        description="resume even when settings that change the run differ from the saved "
        "config.yaml (data, batch, lr, model, objective); the differences go to metrics.jsonl",
    )
    trackers: list[str] = Field(
        default_factory=list, description="accelerate trackers, e.g. [tensorboard]"
    )
    # Training health (hyvl/train/health.py): a collapse only warns, or stops the run with a
    # non-zero exit (keeping the checkpoints written so far).
    on_collapse: Literal["warn", "stop"] = Field(
        "warn", description="on a detected collapse: warn, or stop the run (exit non-zero)"
    )
    health_patience: Int = Field(
        20, gt=0, description="steps a health problem must hold before it is reported"
    )
    # Fine-tuning a pretrained CLIP (docs/tutorials/fine-tuning.md).
    lora: LoraConfig = Field(default_factory=LoraConfig, description="low-rank adapters")
    freeze: list[str] | Literal["towers"] = Field(
        default_factory=list,
        description="parameters not trained: name prefixes (visual.vit.blocks.0., textual.), "
        "or 'towers' (both towers: only projections, alphas, curvature, logit scale train)",
    )
    unfreeze_at: Int = Field(
        0, ge=0, description="step at which train.freeze ends and all parameters train (0: never)"
    )
    lift_lr: Float | None = Field(
        None, gt=0, description="peak lr of the projections and learnable scalars (null: train.lr)"
    )
    # BEiT / ELECTRA-style layer-wise decay: block i of n gets lr * decay^(n - i), the
    # embeddings decay^(n + 1), what follows the last block decay^0.
    layer_decay: Float = Field(
        1.0, gt=0, le=1, description="layer-wise lr decay through the towers' blocks (1: off)"
    )


class EvalConfig(Section):
    """Evaluation during training (``train.eval_every``), with the functions of ``hyvl eval``."""

    where: ClassVar[str] = "eval"
    zeroshot: str = Field(
        "", description="zero-shot data: ImageFolder (classnames.txt, templates.txt) or shards"
    )
    retrieval: str = Field("", description="retrieval data: a COCO captions JSON")
    batch_size: Int = Field(64, gt=0, description="evaluation batch size")
    templates: str = Field(
        "", description="prompt templates: a file or a built-in set ('': beside the data)"
    )
    hierarchy: str = Field(
        "",
        description="class hierarchy (parent<TAB>child) for zero-shot top-1 per family ('': "
        "hierarchy.tsv in or beside the zero-shot folder, if any)",
    )


# --------------------------------------------------------------------------------------
# A run: one recipe
# --------------------------------------------------------------------------------------


DEFAULT_MODEL = "meru_tiny"


class RunConfig(Section):
    """A training run: model, objective, data, train and eval sections, checked together."""

    model: str | dict = Field(
        DEFAULT_MODEL,
        description="a model name (hyvl.list_models()) or a mapping {base: NAME, key: value}",
    )
    objective: ObjectiveConfig = Field(default_factory=ObjectiveConfig, description="losses")
    data: DataConfig = Field(default_factory=DataConfig, description="training data")
    train: TrainConfig = Field(default_factory=TrainConfig, description="optimisation")
    eval: EvalConfig = Field(default_factory=EvalConfig, description="periodic evaluation")

    @model_validator(mode="before")
    @classmethod
    def _family_defaults(cls, data: Any) -> Any:
        """Unset ``objective.kind`` follows the model family, unset boxes follow the objective."""
        if not isinstance(data, dict):
            return data
        # sections given as objects count with the keys that were set on them
        data = {
            k: v.model_dump(exclude_unset=True) if isinstance(v, Section) else v
            for k, v in data.items()
        }
        family, geometry = model_family(data.get("model", DEFAULT_MODEL))
        objective, section = data.get("objective") or {}, data.get("data") or {}
        if not isinstance(objective, dict) or not isinstance(section, dict):
            return data  # pydantic reports the wrong type
        if "kind" not in objective:
            by_geometry = [f for f, v in FAMILIES.items() if v.geometry == geometry]
            kind = family or (by_geometry[0] if by_geometry else None)
            if kind:
                data["objective"] = {**objective, "kind": kind}
        kind = (data.get("objective") or {}).get("kind")
        if "boxes_per_sample" not in section and kind in FAMILIES:
            pairs = _positive(data.get("objective", {}).get("box_pair_weight", 0))
            data["data"] = {**section, "boxes_per_sample": int(FAMILIES[kind].boxes or pairs)}
        return data

    @model_validator(mode="after")
    def _one_recipe(self) -> RunConfig:
        if isinstance(self.model, dict):  # the keys given are model keys with valid values
            spec = {k: v for k, v in self.model.items() if k != "base"}
            from_dict(ModelConfig, spec, "model")
        check_recipe(self)
        return self


def _positive(value: Any) -> bool:
    """A number above 0 (a raw config value, before validation; anything else: False)."""
    try:
        return float(value) > 0
    except (TypeError, ValueError):
        return False


def load_run_config(path: str | Path | None, overrides: list[str] | None = None) -> RunConfig:
    """Read a run config (a packaged recipe name or a YAML path), apply dotted overrides, validate."""
    from hyvl.recipes import resolve_recipe

    data = load_yaml(resolve_recipe(path)) if path else {}
    if "model" not in data and any(o.startswith("model.") for o in overrides or []):
        data["model"] = {"base": DEFAULT_MODEL}
    apply_overrides(data, list(overrides or []))
    return from_dict(RunConfig, data)


def fields_table(cls: type[Section] = RunConfig, prefix: str = "") -> list[dict[str, Any]]:
    """Every key of ``cls`` (nested sections flattened): key, type, default, help."""
    rows: list[dict[str, Any]] = []
    for name, field in cls.model_fields.items():
        key = f"{prefix}{name}"
        section = section_class(field.annotation)
        if section is None and name == "model" and cls is RunConfig:
            section = ModelConfig  # `model.KEY=VALUE` overrides the named model's KEY
            rows.append(field_row(key, field))
        if section is not None:
            rows.extend(fields_table(section, key + "."))
        else:
            rows.append(field_row(key, field))
    return rows
