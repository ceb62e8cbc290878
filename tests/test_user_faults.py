"""What a new user meets first: typos, checks before the work, lost samples, mixed models,
checkpoints from elsewhere, file modes (each test is named after the case it reproduces;
docs/reliability.md lists them)."""

import os
import stat

import pytest
import torch

from hyvl.errors import DataError


def test_export_files_follow_the_umask_not_0600(tmp_path):
    """safetensors writes through a private temporary file (0600): a cluster group sharing the
    run could not read the export. Every atomic write ends with the umask's mode."""
    from safetensors.torch import save_file

    from hyvl.io import atomic_dir, write_text

    old = os.umask(0o022)
    try:
        with atomic_dir(tmp_path / "export") as tmp:
            save_file({"w": torch.zeros(2)}, str(tmp / "model.safetensors"))
            (tmp / "sub").mkdir(mode=0o700)
        write_text(tmp_path / "results.json", "{}\n")
    finally:
        os.umask(old)
    mode = lambda p: stat.S_IMODE(p.stat().st_mode)  # noqa: E731
    assert mode(tmp_path / "export" / "model.safetensors") == 0o644
    assert mode(tmp_path / "export" / "sub") == 0o755
    assert mode(tmp_path / "export") == 0o755
    assert mode(tmp_path / "results.json") == 0o644


def _hyvl(capsys, *argv):
    from hyvl.cli.main import main

    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err.strip()


def test_train_json_unwritable_fails_before_training(tmp_path, capsys):
    code, _, err = _hyvl(
        capsys, "train", "--config", "meru_tiny", "--output-dir", tmp_path / "run",
        "--json", "/proc/x.json",
    )  # fmt: skip
    assert code == 2 and "\n" not in err
    assert "--json /proc/x.json: cannot write in /proc" in err and ".tmp-" not in err
    assert not (tmp_path / "run").exists()  # nothing was built


def test_eval_json_directory_fails_before_evaluation(tmp_path, capsys):
    (tmp_path / "d").mkdir()
    for dest in (f"{tmp_path / 'd'}/", tmp_path / "d"):
        code, _, err = _hyvl(
            capsys, "eval", "zeroshot", "--checkpoint", tmp_path / "none", "--data",
            tmp_path / "none", "--json", dest,
        )  # fmt: skip
        assert code == 2 and "is a directory; give a file name" in err, err


def test_json_missing_folder_is_created_and_said(tmp_path, capsys):
    dest = tmp_path / "new" / "sub" / "models.json"
    code, _, err = _hyvl(capsys, "config", "list", "--json", dest)
    assert code == 0 and f"created folder {dest.parent} for --json" in err
    assert dest.is_file()


def test_export_out_unwritable_fails_before_loading(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    code, _, err = _hyvl(
        capsys, "export", "hub", "--checkpoint", tmp_path / "none", "--out", "/proc/exp"
    )
    assert code == 2 and "--out /proc/exp: cannot write in /proc" in err
    code, _, err = _hyvl(
        capsys, "index", "build", "--checkpoint", tmp_path / "none", "--out", tmp_path / "file"
    )
    assert code == 2 and "exists and is not a directory" in err


def test_index_build_missing_images_dir_is_named(tmp_path, capsys):
    (tmp_path / "images").mkdir()
    code, _, err = _hyvl(
        capsys, "index", "build", "--checkpoint", tmp_path / "none", "--images",
        tmp_path / "imagez", "--out", tmp_path / "idx",
    )  # fmt: skip
    assert code == 2 and err.endswith(f"--images: no such directory: {tmp_path / 'imagez'}")
    assert not (tmp_path / "idx").exists()
    code, _, err = _hyvl(
        capsys, "index", "build", "--checkpoint", tmp_path / "none", "--images",
        f"{tmp_path}/{{000..001}}.tar", "--out", tmp_path / "idx",
    )  # fmt: skip
    assert code == 2 and f"no such file: {tmp_path / '000.tar'}" in err


def test_eval_zeroshot_missing_data_dir_says_no_such_directory(tmp_path, capsys):
    from hyvl.evaluation.zeroshot import load_classification_data

    code, _, err = _hyvl(
        capsys, "eval", "zeroshot", "--checkpoint", tmp_path / "none", "--data",
        tmp_path / "zeroshots",
    )  # fmt: skip
    assert code == 2 and f"no such directory: {tmp_path / 'zeroshots'}" in err
    assert "--classnames" not in err
    with pytest.raises(DataError, match="no such directory"):  # the library says the same
        load_classification_data(tmp_path / "zeroshots", None)


def test_packaged_recipes_carry_no_demo_paths(tmp_path, capsys, monkeypatch):
    """The packaged recipes name no data: a wrong data.train_shards is the first complaint
    (not an eval path the user never set), and a recipe alone names the key to set."""
    from hyvl.config import load_run_config
    from hyvl.recipes import list_recipes

    for name in list_recipes():
        cfg = load_run_config(name)
        paths = (cfg.data.train_shards, cfg.eval.zeroshot, cfg.eval.retrieval)
        assert paths == ("", "", ""), (name, paths)
    monkeypatch.chdir(tmp_path)
    code, _, err = _hyvl(
        capsys, "train", "--config", "meru_tiny", "--output-dir", "run",
        "data.train_shards=dat/train/*.tar",
    )  # fmt: skip
    assert code == 2 and "\n" not in err
    assert err.startswith("hyvl train: error: data.train_shards="), err
    assert "eval." not in err and "runs/demo" not in err
    code, _, err = _hyvl(capsys, "train", "--config", "meru_tiny", "--output-dir", "run")
    assert code == 2 and "data.train_shards is empty: pass data.train_shards=" in err


def _images_with_shared_stems(root):
    from PIL import Image

    for rel, colour in (("a/cat.jpg", "red"), ("b/cat.jpg", "blue"), ("one.png", "green"),
                        ("one.jpg", "white"), ("a_cat.jpg", "black")):  # fmt: skip
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (16, 16), colour).save(root / rel)


def test_make_shards_images_sharing_a_stem_are_all_written_and_read(tmp_path, capsys):
    """a/cat.jpg and b/cat.jpg, one.png and one.jpg, a_cat.jpg (a/cat's key made safe), and a
    second caption line for a/cat.jpg: 6 samples written is 6 samples read back."""
    import json

    images = tmp_path / "images"
    _images_with_shared_stems(images)
    names = ["a/cat.jpg", "b/cat.jpg", "one.png", "one.jpg", "a_cat.jpg", "a/cat.jpg"]
    lines = [json.dumps({"image": n, "caption": f"caption {i}"}) for i, n in enumerate(names)]
    (tmp_path / "caps.jsonl").write_text("\n".join(lines) + "\n")
    grounded = [
        json.dumps(
            {"image": n, "caption": f"c {i}", "boxes": [{"bbox": [0, 0, 8, 8], "text": "x"}]}
        )
        for i, n in enumerate(names)
    ]
    (tmp_path / "grounded.jsonl").write_text("\n".join(grounded) + "\n")
    for source in (
        ["--captions", tmp_path / "caps.jsonl"],
        ["--grounded", tmp_path / "grounded.jsonl"],
    ):
        out = tmp_path / f"shards{source[0]}"
        code, text, _ = _hyvl(
            capsys, "data", "make-shards", "--images", images, *source, "--out", out,
            "--samples-per-shard", 4, "--json", tmp_path / "made.json",
        )  # fmt: skip
        assert code == 0 and json.loads((tmp_path / "made.json").read_text())["samples"] == 6
        code, _, err = _hyvl(
            capsys, "data", "stats", f"{out}/*.tar", "--json", tmp_path / "stats.json"
        )
        stats = json.loads((tmp_path / "stats.json").read_text())
        assert code == 0 and stats["samples"] == 6, (stats, err)
        assert not stats.get("skipped"), stats


def _class_folders(root, names):
    from PIL import Image

    for name in names:
        (root / name).mkdir(parents=True)
        Image.new("RGB", (8, 8), "red").save(root / name / "0.jpg")
    return root


def test_eval_zeroshot_wnid_folders_use_the_wordnet_names(tmp_path, caplog):
    """ImageNet's n01440764-style folders: the shipped names and prompts (as `eval suite`),
    for `eval zeroshot --data`, training's eval.zeroshot (the same loader) and viz."""
    from hyvl.evaluation.classnames import folder_templates
    from hyvl.evaluation.zeroshot import load_classification_data

    root = _class_folders(tmp_path / "val", ["n01440764", "n01443537", "n01484850"])
    _, names, folder = load_classification_data(root, lambda im: im)
    assert names == ["tench", "goldfish", "great white shark"]
    assert folder_templates(folder, ["n01440764", "n01443537", "n01484850"])[0].count("{}") == 1
    assert not [r for r in caplog.records if r.levelname == "WARNING"]
    (root / "classnames.txt").write_text("a\nb\nc\n")  # the user's own names win
    assert load_classification_data(root, lambda im: im)[1] == ["a", "b", "c"]


def test_id_like_class_folders_without_classnames_warn(tmp_path, caplog):
    from hyvl.config import load_run_config
    from hyvl.evaluation.zeroshot import load_classification_data
    from hyvl.train.preflight import check_eval_paths

    root = _class_folders(tmp_path / "ids", ["001", "002", "003", "004"])
    with caplog.at_level("WARNING"):
        _, names, _ = load_classification_data(root, lambda im: im)
    assert names == ["001", "002", "003", "004"]
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warned) == 1 and "look like ids (001, 002, 003, ...)" in warned[0]
    assert f"add {root / 'classnames.txt'}" in warned[0]
    caplog.clear()
    wnids = _class_folders(tmp_path / "in21k", ["n00004475", "n01440764"])  # not all in 1k
    cfg = load_run_config("meru_tiny", [f"eval.zeroshot={wnids}"])
    with caplog.at_level("WARNING"):
        check_eval_paths(cfg)  # training says it at the start, not at its first evaluation
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warned) == 1 and "1 of the 2 WordNet-id class folders" in warned[0]
    assert "n00004475" in warned[0]
    _class_folders(tmp_path / "named", ["cat", "dog"])
    caplog.clear()
    with caplog.at_level("WARNING"):
        load_classification_data(tmp_path / "named", lambda im: im)
    assert not caplog.records
