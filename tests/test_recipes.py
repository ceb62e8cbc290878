"""Packaged recipes: found by name, by NAME.yaml or by path, from the package, one source."""

from pathlib import Path

import pytest
import yaml

import hyvl
from hyvl import recipes
from hyvl.config import load_run_config
from hyvl.errors import ConfigError
from hyvl.models.named import resolve_model_config

REPO = Path(__file__).resolve().parents[1]
FAMILIES = ("clip", "meru", "hycoclip")
SIZES = ("tiny", "vit_s", "vit_b", "vit_l")
# the newer objectives: tiny and the papers' ViT-S/B recipes
RECENT = ("uncha", "atmg", "phyclip")
RECENT_SIZES = ("tiny", "vit_s", "vit_b")
# fine-tuning from a pretrained CLIP (model.init): OpenCLIP ViT-B/16 and ViT-L/14, and tiny
FINETUNE = [f"{f}_{s}_ft" for f in ("meru", "hycoclip") for s in ("tiny", "vit_b", "vit_l")]
GROUNDED = ["clip_tiny_grounded", "meru_tiny_grounded"]


def test_every_recipe_is_package_data_and_loads():
    folder = recipes.recipes_dir()
    # inside the package (what the wheel ships), not the checkout's configs/ link
    assert folder.resolve() == (Path(hyvl.__file__).parent / "configs").resolve()
    names = recipes.list_recipes()
    assert names == sorted(
        [f"{f}_{s}" for f in FAMILIES for s in SIZES]
        + [f"{f}_{s}" for f in RECENT for s in RECENT_SIZES]
        + FINETUNE
        + GROUNDED
    )
    for name in names:
        cfg = load_run_config(name)
        assert recipes.recipe_description(name)  # one line for `hyvl config list`
        if name in GROUNDED:  # the tiny model, trained with the box crop <-> box text pair
            assert cfg.model == name.removesuffix("_grounded")
            assert cfg.objective.box_pair_weight > 0 and cfg.data.boxes_per_sample >= 1
            continue
        if name not in FINETUNE:
            assert cfg.model == name
            continue
        # a named architecture whose towers start elsewhere; the model config validates
        model = resolve_model_config(cfg.model)
        assert cfg.model["base"] == name.removesuffix("_ft")
        assert cfg.objective.kind == name.split("_")[0]
        if "tiny" in name:
            assert model.init == ""  # the user's CLIP run: model.init=RUN
        else:
            assert model.init == ("ViT-B-16:openai" if "vit_b" in name else "ViT-L-14:openai")
            assert cfg.train.lora.rank == 16 and cfg.train.lr == 1e-4  # HySAC's
            assert model.vision.timm_name.endswith("_clip_quickgelu_224") and model.text.quick_gelu


def test_checkout_configs_folder_is_the_packaged_one():
    assert sorted(p.name for p in (REPO / "configs").glob("*.yaml")) == [
        f"{n}.yaml" for n in recipes.list_recipes()
    ]
    assert (REPO / "configs").resolve() == recipes.recipes_dir().resolve()


def test_name_name_yaml_and_path_resolve_to_the_same_recipe():
    packaged = recipes.recipes_dir() / "meru_tiny.yaml"
    assert recipes.resolve_recipe("meru_tiny") == packaged
    assert recipes.resolve_recipe("meru_tiny.yaml") == packaged
    assert recipes.resolve_recipe(str(packaged)) == packaged
    assert load_run_config("meru_tiny.yaml") == load_run_config(str(packaged))


def test_an_existing_path_wins_over_the_packaged_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("meru_tiny.yaml").write_text("model: meru_tiny\ntrain:\n  max_steps: 7\n")
    assert recipes.resolve_recipe("meru_tiny.yaml") == Path("meru_tiny.yaml")
    assert load_run_config("meru_tiny.yaml").train.max_steps == 7
    # the bare name is not a file here: the packaged recipe
    assert load_run_config("meru_tiny").train.max_steps == 400


def test_unknown_name_lists_the_known_ones():
    with pytest.raises(
        ConfigError, match=r"did you mean 'hycoclip_tiny'.*known recipes: atmg_tiny, atmg_vit_b"
    ):
        load_run_config("hycoclip_tiyn")
    # a missing path with folders is not looked up in the package
    with pytest.raises(ConfigError, match=r"'nowhere/meru_tiny.yaml' is neither a file"):
        recipes.resolve_recipe("nowhere/meru_tiny.yaml")


def test_demo_takes_its_recipe_from_the_packaged_yaml(tmp_path, monkeypatch):
    from hyvl.train.demo import demo_config

    folder = tmp_path / "configs"
    folder.mkdir()
    recipe = yaml.safe_load((recipes.recipes_dir() / "clip_tiny.yaml").read_text())
    recipe["train"].update(lr=3e-3, max_steps=400, warmup_steps=40)
    (folder / "clip_tiny.yaml").write_text(yaml.safe_dump(recipe))
    monkeypatch.setattr(recipes, "recipes_dir", lambda: folder)
    cfg = demo_config("clip", tmp_path / "data", steps=100, batch_size=16)
    assert cfg.train.lr == 3e-3
    assert (cfg.train.max_steps, cfg.train.batch_size, cfg.train.eval_every) == (100, 16, 0)
    # the recipe's warmup share (40 of 400 steps) is kept
    assert cfg.train.warmup_steps == 10
    assert cfg.data.train_shards == str(tmp_path / "data" / "train" / "*.tar")
