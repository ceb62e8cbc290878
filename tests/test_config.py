"""Config validation: what a user sees when a YAML file or an override is wrong."""

import pytest

from hyvl.config import (
    DEFAULT_MODEL,
    FAMILIES,
    DataConfig,
    RunConfig,
    TrainConfig,
    fields_table,
    load_run_config,
    to_dict,
)
from hyvl.errors import ConfigError


def test_contract_keys_exist_and_override(tmp_path):
    cfg_file = tmp_path / "run.yaml"
    cfg_file.write_text("model: clip_tiny\ntrain:\n  max_steps: 5\n")
    cfg = load_run_config(
        cfg_file,
        [
            "train.batch_size=8",
            "train.checkpoint_every=2",
            "train.seed=3",
            "data.train_shards=a/{0..3}.tar",
        ],
    )
    assert cfg.model == "clip_tiny"
    assert (
        cfg.train.max_steps,
        cfg.train.batch_size,
        cfg.train.checkpoint_every,
        cfg.train.seed,
    ) == (5, 8, 2, 3)
    assert cfg.data.train_shards == "a/{0..3}.tar"


def test_unknown_key_names_it_and_the_nearest(tmp_path):
    with pytest.raises(ConfigError) as err:
        load_run_config(None, ["train.max_step=10"])
    assert str(err.value) == "unknown config key 'train.max_step'; did you mean 'train.max_steps'?"
    cfg_file = tmp_path / "bad.yaml"
    cfg_file.write_text("data:\n  train_shard: x.tar\n")
    with pytest.raises(ConfigError, match=r"'data\.train_shard'.*'data\.train_shards'"):
        load_run_config(cfg_file)
    # keys of the model section are checked at load too, not when the model is built
    with pytest.raises(ConfigError, match=r"'model\.vision\.timm_nam'.*'model\.vision\.timm_name'"):
        load_run_config(None, ["model.vision.timm_nam=x"])
    with pytest.raises(ConfigError, match=r"unknown config key 'trian'; did you mean 'train'"):
        load_run_config(None, ["trian.lr=1"])


def test_bad_values_are_rejected():
    with pytest.raises(ConfigError, match="train.batch_size: expected an integer, got 'abc'"):
        load_run_config(None, ["train.batch_size=abc"])
    with pytest.raises(ConfigError, match="objective.kind: 'siglip' is not one of"):
        load_run_config(None, ["objective.kind=siglip"])
    with pytest.raises(ConfigError, match="not of the form key=value"):
        load_run_config(None, ["train.max_steps"])
    with pytest.raises(ConfigError, match="data.train_shards: expected a string or a list, got 5"):
        load_run_config(None, ["data.train_shards=5"])
    with pytest.raises(ConfigError, match="train.lr: expected a finite number"):
        load_run_config(None, ["train.lr=nan"])
    with pytest.raises(ConfigError, match=r"train.betas: too few values"):
        load_run_config(None, ["train.betas=[0.9]"])


def test_numbers_parse_as_users_type_them(tmp_path):
    # YAML 1.1 reads 1e-3 and 1e5 (no dot) as strings
    cfg = load_run_config(None, ["train.lr=1e-3", "train.max_steps=1e5", "train.min_lr=5E-6"])
    assert (cfg.train.lr, cfg.train.max_steps, cfg.train.min_lr) == (1e-3, 100000, 5e-6)
    assert isinstance(cfg.train.max_steps, int)
    cfg_file = tmp_path / "run.yaml"
    cfg_file.write_text("train:\n  lr: 1e-3\n  warmup_steps: 2e2\n")
    cfg = load_run_config(cfg_file)
    assert (cfg.train.lr, cfg.train.warmup_steps) == (1e-3, 200)
    with pytest.raises(ConfigError, match="train.max_steps: expected an integer"):
        load_run_config(None, ["train.max_steps=1.5"])


@pytest.mark.parametrize(
    "override,message",
    [
        ("train.lr=-1", "train.lr must be > 0, got -1"),
        ("train.lr=0", "train.lr must be > 0, got 0"),
        ("train.max_steps=0", "train.max_steps must be > 0, got 0"),
        ("train.batch_size=0", "train.batch_size must be > 0, got 0"),
        ("train.warmup_steps=-1", "train.warmup_steps must be >= 0, got -1"),
        ("train.grad_clip=-1", "train.grad_clip must be >= 0, got -1"),
        ("train.grad_accum=0", "train.grad_accum must be > 0, got 0"),
        ("train.weight_decay=-0.1", "train.weight_decay must be >= 0, got -0.1"),
        ("train.betas=[0.9, 1.0]", "train.betas[1] must be < 1, got 1.0"),
        ("train.checkpoint_every=0", "train.checkpoint_every must be > 0, got 0"),
        ("train.log_every=0", "train.log_every must be > 0, got 0"),
        ("data.shuffle_buffer=-5", "data.shuffle_buffer must be >= 0, got -5"),
        ("data.workers=-1", "data.workers must be >= 0, got -1"),
        ("data.rrc_scale=[0.9, 0.5]", "data.rrc_scale must be (low, high) with low <= high"),
        ("eval.batch_size=0", "eval.batch_size must be > 0, got 0"),
        ("objective.entail_weight=-1", "objective.entail_weight must be >= 0, got -1"),
        ("model.embed_dim=0", "model.embed_dim must be > 0, got 0"),
        ("model.curv_init=0", "model.curv_init must be > 0, got 0"),
        ("model.vision.image_size=-3", "model.vision.image_size must be > 0, got -3"),
    ],
)
def test_numeric_ranges_are_checked_with_one_line_naming_the_key(override, message):
    with pytest.raises(ConfigError) as err:
        load_run_config(None, [override])
    assert str(err.value).startswith(message)
    assert "\n" not in str(err.value)


def test_sections_built_in_python_are_checked_too():
    with pytest.raises(ConfigError, match="train.lr must be > 0"):
        TrainConfig(lr=-1.0)
    with pytest.raises(ConfigError, match="'data.workerz'; did you mean 'data.workers'"):
        DataConfig(workerz=1)


def test_grad_clip_null_means_off():
    assert load_run_config(None, ["train.grad_clip=null"]).train.grad_clip == 0.0
    assert load_run_config(None, ["train.grad_clip=1.5"]).train.grad_clip == 1.5


def test_model_overrides_on_a_named_model():
    cfg = load_run_config(None, ["model.embed_dim=64"])
    assert cfg.model == {"base": DEFAULT_MODEL, "embed_dim": 64}


def test_round_trip_through_dict():
    cfg = load_run_config(None, ["train.betas=[0.9, 0.95]"])
    assert cfg.train.betas == (0.9, 0.95)
    assert RunConfig.model_validate(to_dict(cfg)) == cfg
    again = load_run_config(None, [])
    assert to_dict(again)["train"]["betas"] == [0.9, 0.98]


def test_missing_config_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match="nope.yaml"):
        load_run_config(tmp_path / "nope.yaml")


def test_one_precision_vocabulary_accepting_the_old_word(tmp_path):
    # accelerate's "no" (which YAML 1.1 reads as False) is fp32
    assert load_run_config(None, ["train.mixed_precision=no"]).train.mixed_precision == "fp32"
    assert load_run_config(None, ["train.mixed_precision=fp32"]).train.mixed_precision == "fp32"
    assert load_run_config(None, ["train.mixed_precision=bf16"]).train.mixed_precision == "bf16"
    cfg_file = tmp_path / "run.yaml"
    cfg_file.write_text("train:\n  mixed_precision: no\n")
    assert load_run_config(cfg_file).train.mixed_precision == "fp32"
    assert RunConfig().train.mixed_precision == "fp32"
    with pytest.raises(ConfigError, match="train.mixed_precision: True is not one of 'fp32'"):
        load_run_config(None, ["train.mixed_precision=yes"])


# ------------------------------------------------------------------------------------------
# A recipe is one unit
# ------------------------------------------------------------------------------------------


def test_default_run_config_is_a_consistent_plain_data_recipe():
    cfg = RunConfig()
    family = FAMILIES[cfg.objective.kind]
    assert cfg.model == f"{cfg.objective.kind}_tiny"
    # plain image-text shards feed it: no box crops asked for, so no sample is skipped for them
    assert not family.boxes and cfg.data.boxes_per_sample == 0
    assert cfg.train.warmup_steps < cfg.train.max_steps


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_the_model_family_sets_objective_and_box_crops(family):
    cfg = load_run_config(None, [f"model={family}_vit_b"])
    assert cfg.objective.kind == family
    assert cfg.data.boxes_per_sample == int(FAMILIES[family].boxes)
    assert FAMILIES["hycoclip"].boxes and not FAMILIES["meru"].boxes
    # also for a model named as a base with overrides
    cfg = load_run_config(None, [f"model={family}_tiny", "model.embed_dim=64"])
    assert cfg.objective.kind == family
    if family != "uncha":  # a box <-> box-text pair loads box crops for any objective
        cfg = load_run_config(None, [f"model={family}_vit_b", "objective.box_pair_weight=0.5"])
        assert cfg.data.boxes_per_sample == 1


@pytest.mark.parametrize(
    "overrides,message",
    [
        (["model=clip_tiny", "objective.kind=meru"], r"objective.kind='meru' does not match model 'clip_tiny'"),
        (["model=meru_tiny", "objective.kind=hycoclip"], r"use model=hycoclip_tiny or objective.kind=meru"),
        (["model=hycoclip_tiny", "data.boxes_per_sample=0"], r"objective.kind='hycoclip' needs box crops but data.boxes_per_sample=0"),
        (["model=meru_tiny", "data.boxes_per_sample=1"], r"data.boxes_per_sample=1 loads box crops objective.kind='meru' does not use"),
        (["model=clip_tiny", "data.boxes_per_sample=2"], r"set data.boxes_per_sample=0"),
        (["model=clip_tiny", "objective.box_pair_weight=1", "data.boxes_per_sample=0"], r"objective.box_pair_weight=1.0 needs box crops but data.boxes_per_sample=0"),
        (["model.geometry=euclidean"], r"objective.kind='meru' trains a lorentz model, but model.geometry is 'euclidean'"),
        (["model={base: clip_tiny, geometry: lorentz}"], r"objective.kind='clip' trains a euclidean model"),
    ],
)  # fmt: skip
def test_inconsistent_recipes_fail_at_load_naming_the_keys(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_run_config(None, overrides)


def test_another_familys_objective_is_an_ablation_without_entailment():
    # HyCoCLIP's box-augmented CLIP baseline: contrastive terms on boxes, euclidean model
    overrides = ["model=clip_tiny", "objective.kind=hycoclip"]
    with pytest.raises(ConfigError, match=r"or objective.entail_weight=0"):
        load_run_config(None, overrides)
    cfg = load_run_config(None, [*overrides, "objective.entail_weight=0"])
    assert (cfg.objective.kind, cfg.data.boxes_per_sample) == ("hycoclip", 1)


def test_a_custom_model_mapping_takes_the_objective_of_its_geometry():
    cfg = load_run_config(None, ["model={geometry: euclidean, embed_dim: 32}"])
    assert (cfg.objective.kind, cfg.data.boxes_per_sample) == ("clip", 0)


def test_fields_table_lists_every_key_with_type_default_and_help():
    rows = {r["key"]: r for r in fields_table()}
    assert rows["train.lr"]["type"] == "float" and rows["train.lr"]["default"] == 5e-4
    assert rows["train.mixed_precision"]["type"] == "fp32 | bf16 | fp16"
    assert rows["model.vision.patch_size"]["type"] == "int | null"
    assert rows["train.betas"]["default"] == [0.9, 0.98]
    assert "model" in rows and "model.embed_dim" in rows and "objective.kind" in rows
    assert all(r["help"] and "\n" not in r["help"] for r in rows.values())


def test_the_default_config_yields_batches_from_plain_image_text_shards(tmp_path):
    # the old defaults asked for a box crop per sample, so plain shards gave no batch, ever
    import io
    import tarfile

    import torch
    from PIL import Image

    from hyvl.data.pipeline import build_train_loader

    shard = tmp_path / "plain.tar"
    with tarfile.open(shard, "w") as tar:
        for i in range(6):
            buf = io.BytesIO()
            Image.new("RGB", (40, 40), (40 * i, 10, 10)).save(buf, format="JPEG")
            for ext, data in (("jpg", buf.getvalue()), ("txt", f"a red square {i}".encode())):
                info = tarfile.TarInfo(f"{i:04d}.{ext}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    overrides = [f"data.train_shards={shard}", "data.workers=0", "data.shuffle_buffer=8"]
    cfg = load_run_config(None, overrides)

    def tokenizer(texts):  # the real one costs seconds to build; captions are not the point
        return torch.zeros(len(texts), 8, dtype=torch.long)

    loader = build_train_loader(cfg.data, batch_size=4, image_size=32, tokenizer=tokenizer)
    batch = next(iter(loader))
    assert batch.images.shape == (4, 3, 32, 32) and batch.box_images is None


def test_empty_sections_in_yaml_take_the_defaults(tmp_path):
    cfg_file = tmp_path / "run.yaml"
    cfg_file.write_text("model: hycoclip_tiny\nobjective:\n")
    cfg = load_run_config(cfg_file)
    assert (cfg.objective.kind, cfg.data.boxes_per_sample) == ("hycoclip", 1)
