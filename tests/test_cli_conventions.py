"""CLI conventions: defaults in --help, one precision vocabulary, log-friendly progress, saved ANN
indexes and `index build --json`."""

from __future__ import annotations

import argparse
import io
import json

import pytest
import torch
from PIL import Image

import hyvl
from hyvl import lorentz
from hyvl.cli.main import build_parser, main
from hyvl.progress import progress_bar
from hyvl.search.index import EmbeddingIndex


def _parsers(parser):
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                yield from _parsers(child)


VERBS = {p.prog: p for p in _parsers(build_parser())}


@pytest.mark.parametrize("prog", sorted(VERBS))
def test_every_help_shows_every_default(prog, monkeypatch):
    """Each verb's --help, as printed: every option has a help text, and every default that says
    something (not None, not an off flag) is shown as '(default: VALUE)'."""
    monkeypatch.setenv("COLUMNS", "1000")  # one line per option: no value is wrapped
    parser = VERBS[prog]
    printed = " ".join(parser.format_help().split())
    for action in parser._actions:
        if not action.option_strings or action.help == argparse.SUPPRESS:
            continue
        if isinstance(action, (argparse._HelpAction, argparse._VersionAction)):
            continue
        assert (action.help or "").strip(), f"{prog} {action.option_strings[0]}: no help text"
        quiet = action.default is None or action.default is False
        if not quiet and action.default != argparse.SUPPRESS:
            want = f"(default: {action.default})"
            assert want in printed, f"{prog} {action.option_strings[0]}: {want} not shown"


def test_help_defaults_as_a_user_reads_them():
    help_of = {prog: " ".join(p.format_help().split()) for prog, p in VERBS.items()}
    assert len(help_of) > 20
    assert "images or texts per forward pass (default: 64)" in help_of["hyvl eval zeroshot"]
    assert "(default: fp32)" in help_of["hyvl eval zeroshot"]
    assert "decoding images (default: 0)" in help_of["hyvl eval zeroshot"]
    assert "(default: torch)" in help_of["hyvl retrieve"]
    assert "(default: 20)" in help_of["hyvl traverse"]
    assert "samples read from --data (default: 512)" in help_of["hyvl viz disk"]
    assert "samples per tar (default: 1000)" in help_of["hyvl data make-shards"]


@pytest.mark.parametrize(
    ("word", "want"), [("fp32", "fp32"), ("no", "fp32"), ("bfloat16", "bf16"), ("fp16", "fp16")]
)
def test_one_precision_vocabulary_accepting_old_words(word, want):
    parser = build_parser()
    for argv in (
        ["eval", "zeroshot", "--checkpoint", "c", "--data", "d"],
        ["index", "build", "--checkpoint", "c", "--out", "o"],
    ):
        assert parser.parse_args([*argv, "--precision", word]).precision == want


def test_progress_in_a_log_file_is_whole_lines_without_escape_codes():
    log = io.StringIO()  # not a terminal, as a redirected stderr
    outer = progress_bar(range(2), desc="outer", file=log, mininterval=0)
    for _ in outer:
        for _ in progress_bar(range(3), desc="inner", file=log, mininterval=0, leave=False):
            pass
    text = log.getvalue()
    assert "\x1b[" not in text and "\r" not in text
    lines = text.splitlines()
    assert lines and all(line.strip() for line in lines)
    assert any(line.startswith("inner: 3/3") for line in lines)
    assert lines[-1].startswith("outer: 2/2")


def _hyperbolic_index(n=400, d=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    y = lorentz.exp_map0(torch.randn(n, d, generator=g) * 0.3, 0.7)
    meta = {"geometry": "lorentz", "curv": 0.7, "embed_dim": d}
    return EmbeddingIndex(y, [{"kind": "image", "item": str(i)} for i in range(n)], meta)


def test_saved_hnsw_index_is_reloaded_with_identical_results(tmp_path, monkeypatch):
    import faiss

    index = _hyperbolic_index()
    index.save(tmp_path / "idx")
    queries = lorentz.exp_map0(
        torch.randn(20, 16, generator=torch.Generator().manual_seed(1)) * 0.3, 0.7
    )
    first = index.search(queries, 5, kind="image", backend="hnsw")
    saved = sorted(p.name for p in (tmp_path / "idx").glob("ann-*"))
    assert saved == ["ann-hnsw-image-m32.faiss", "ann-hnsw-image-m32.json"]

    def no_rebuild(*args, **kwargs):
        raise AssertionError("the HNSW index was rebuilt instead of loaded")

    monkeypatch.setattr(faiss, "IndexHNSWFlat", no_rebuild)
    again = EmbeddingIndex.load(tmp_path / "idx").search(queries, 5, kind="image", backend="hnsw")
    assert again == first
    monkeypatch.undo()
    # other embeddings under the same directory: the saved graph is stale, so it is rebuilt
    other = _hyperbolic_index(seed=3)
    other.save(tmp_path / "idx")
    fresh = EmbeddingIndex.load(tmp_path / "idx").search(queries, 5, kind="image", backend="hnsw")
    exact = other.search(queries, 5, kind="image", backend="torch")
    overlap = [
        len({h["row"] for h in a} & {h["row"] for h in b})
        for a, b in zip(fresh, exact, strict=True)
    ]
    assert sum(overlap) / (5 * len(overlap)) > 0.8


def test_index_build_ann_and_json_counts(tmp_path):
    torch.manual_seed(0)
    hyvl.save(
        hyvl.create_model("meru_tiny", vision={"depth": 1}, text={"layers": 1}), tmp_path / "c"
    )
    (tmp_path / "img").mkdir()
    for i, colour in enumerate(["red", "green", "blue"]):
        Image.new("RGB", (40, 40), colour).save(tmp_path / "img" / f"{i}.png")
    (tmp_path / "texts.txt").write_text("red\ngreen\n")
    args = ["index", "build", "--checkpoint", tmp_path / "c", "--images", tmp_path / "img"]
    args += ["--texts", tmp_path / "texts.txt", "--out", tmp_path / "idx", "--ann", "hnsw"]
    assert main([str(a) for a in [*args, "--json", tmp_path / "b.json"]]) == 0
    summary = json.loads((tmp_path / "b.json").read_text())
    assert summary["counts"] == {"image": 3, "text": 2} and summary["items"] == 5
    assert [p.rsplit("/", 1)[-1] for p in summary["ann"]] == [
        "ann-hnsw-image-m32.faiss",
        "ann-hnsw-text-m32.faiss",
    ]
