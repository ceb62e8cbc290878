"""Config validation: what a user sees when a YAML file or an override is wrong."""

import pytest

from hyvl.config import RunConfig, load_run_config, to_dict
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
    with pytest.raises(ConfigError, match=r"'train\.max_step'.*'train\.max_steps'"):
        load_run_config(None, ["train.max_step=10"])
    cfg_file = tmp_path / "bad.yaml"
    cfg_file.write_text("data:\n  train_shard: x.tar\n")
    with pytest.raises(ConfigError, match=r"'data\.train_shard'.*'data\.train_shards'"):
        load_run_config(cfg_file)


def test_bad_values_are_rejected():
    with pytest.raises(ConfigError, match="train.batch_size: expected an integer"):
        load_run_config(None, ["train.batch_size=abc"])
    with pytest.raises(ConfigError, match="objective.kind"):
        load_run_config(None, ["objective.kind=siglip"])
    with pytest.raises(ConfigError, match="train.max_steps must be positive"):
        load_run_config(None, ["train.max_steps=0"])
    with pytest.raises(ConfigError, match="not of the form key=value"):
        load_run_config(None, ["train.max_steps"])


def test_model_overrides_on_a_named_model():
    cfg = load_run_config(None, ["model.embed_dim=64"])
    assert cfg.model == {"base": RunConfig.model, "embed_dim": 64}


def test_round_trip_through_dict():
    cfg = load_run_config(None, ["train.betas=[0.9, 0.95]"])
    assert cfg.train.betas == (0.9, 0.95)
    again = load_run_config(None, [])
    assert to_dict(again)["train"]["betas"] == [0.9, 0.98]


def test_missing_config_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match="nope.yaml"):
        load_run_config(tmp_path / "nope.yaml")


def test_yaml_booleans_spelling_a_choice_are_that_choice(tmp_path):
    # YAML 1.1 reads `no` as False; accelerate users write mixed_precision=no
    assert load_run_config(None, ["train.mixed_precision=no"]).train.mixed_precision == "no"
    cfg_file = tmp_path / "run.yaml"
    cfg_file.write_text("train:\n  mixed_precision: no\n")
    assert load_run_config(cfg_file).train.mixed_precision == "no"
    with pytest.raises(ConfigError, match="train.mixed_precision: True is not one of"):
        load_run_config(None, ["train.mixed_precision=yes"])
