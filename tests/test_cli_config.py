"""`hyvl config list | show | keys`, in process."""

import json

import yaml

from hyvl.cli.main import main
from hyvl.config import RunConfig, load_run_config
from hyvl.recipes import list_recipes


def test_config_list_names_every_recipe_with_a_description(tmp_path, capsys):
    assert main(["config", "list", "--json", str(tmp_path / "r.json")]) == 0
    out = capsys.readouterr().out
    recipes = json.loads((tmp_path / "r.json").read_text())["recipes"]
    assert [r["name"] for r in recipes] == list_recipes()
    for r in recipes:
        assert r["description"] and r["name"] in out and r["description"] in out
    hyco = next(r for r in recipes if r["name"] == "hycoclip_vit_b")
    assert hyco["description"].startswith("HyCoCLIP with a ViT-B")


def test_config_show_prints_the_resolved_yaml_with_overrides(tmp_path, capsys):
    args = ["config", "show", "hycoclip_tiny", "train.lr=1e-3", "train.max_steps=7"]
    assert main([*args, "--json", str(tmp_path / "c.json")]) == 0
    shown = yaml.safe_load(capsys.readouterr().out)
    assert shown == json.loads((tmp_path / "c.json").read_text())
    assert (shown["train"]["lr"], shown["train"]["max_steps"]) == (1e-3, 7)
    # every default is filled in, and the family chose objective and box crops
    assert shown["objective"]["kind"] == "hycoclip" and shown["data"]["boxes_per_sample"] == 1
    assert set(shown["train"]) == set(RunConfig.model_fields["train"].annotation.model_fields)
    # what it prints is a config file `hyvl train --config` reads back to the same run
    saved = tmp_path / "resolved.yaml"
    saved.write_text(yaml.safe_dump(shown))
    assert load_run_config(saved) == load_run_config("hycoclip_tiny", args[3:])


def test_config_show_errors_are_one_line_and_exit_2(capsys):
    assert main(["config", "show", "meru_tiny", "train.max_step=3"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.endswith("unknown config key 'train.max_step'; did you mean 'train.max_steps'?")
    assert "\n" not in err
    assert main(["config", "show", "meru_tiny", "model=meru_huge"]) == 2
    assert "unknown model 'meru_huge'" in capsys.readouterr().err
    assert main(["config", "show", "meru_tiyn"]) == 2
    assert f"known recipes: {list_recipes()[0]}," in capsys.readouterr().err


def test_config_keys_lists_every_key_with_type_default_and_help(tmp_path, capsys):
    assert main(["config", "keys", "--json", str(tmp_path / "k.json")]) == 0
    out = capsys.readouterr().out
    rows = json.loads((tmp_path / "k.json").read_text())["keys"]
    keys = {r["key"]: r for r in rows}
    # the contract's keys are all there
    for key in ("train.max_steps", "train.batch_size", "train.checkpoint_every", "train.seed"):
        assert key in keys and key in out
    assert "data.train_shards" in keys
    assert keys["train.warmup_steps"] == {
        "key": "train.warmup_steps",
        "type": "int",
        "default": 100,
        "help": "linear warmup steps before the cosine",
    }
    assert all(set(r) == {"key", "type", "default", "help"} and r["help"] for r in rows)
    header = out.splitlines()[0].split()
    assert header == ["key", "type", "default", "help"]


def test_help_keeps_the_examples_one_per_line(capsys):
    # the defaults formatter set once for every verb must not re-wrap hand-made epilogs
    for verb in ("config", "train"):
        try:
            main([verb, "--help"])
        except SystemExit as stop:
            assert stop.code == 0
        out = capsys.readouterr().out
        assert f"examples:\n  hyvl {verb} " in out
