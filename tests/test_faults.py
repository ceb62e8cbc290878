"""Fault injection: every artefact hyvl writes survives an exception, a full disk and a kill -9
in the middle of its write with the previous version intact (issue 14, cases 3 and 5).

Full disks are real: a small tmpfs mounted by the test (the tests run as root here and in CI).
Kills are real: a forked child process is stopped with SIGKILL while it is blocked inside the
write (a hook that signals the parent through a pipe, then sleeps), after part of the new
version is on disk. Forking (instead of a fresh interpreter) keeps each kill test well under a
second; the children only write files, so no OpenMP thread pool is involved after the fork.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import select
import signal
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

import hyvl
from hyvl.errors import HyvlError
from hyvl.io import atomic_dir, atomic_file, write_text
from hyvl.search.index import EmbeddingIndex

from conftest import fill, small_disk


def run_cli(*args):
    from hyvl.cli.main import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in args])
    return SimpleNamespace(returncode=code, stdout=out.getvalue(), stderr=err.getvalue())


def snapshot(root: Path) -> dict[str, str]:
    """relative path -> sha1 of every file under ``root`` (hidden staging entries included)."""
    return {
        str(p.relative_to(root)): hashlib.sha1(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def random_index(n: int, seed: int = 0, dim: int = 8) -> EmbeddingIndex:
    g = torch.Generator().manual_seed(seed)
    emb = torch.randn(n, dim, generator=g)
    items = [{"kind": "image", "item": f"img{seed}_{i}.jpg"} for i in range(n)]
    return EmbeddingIndex(emb, items, {"geometry": "lorentz", "curv": 1.0, "embed_dim": dim})


def kill_mid_write(action, install_hook) -> None:
    """Run ``action()`` in a forked child whose write blocks where ``install_hook(block)``
    puts ``block``; SIGKILL the child there and reap it."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: never returns into pytest
        try:
            os.close(r)

            def block():
                os.write(w, b"x")
                time.sleep(60)

            install_hook(block)
            action()
        finally:
            os._exit(3)
    os.close(w)
    try:
        ready, _, _ = select.select([r], [], [], 30)
        assert ready, "the child never reached the write"
        os.kill(pid, signal.SIGKILL)
    finally:
        _, status = os.waitpid(pid, 0)
        os.close(r)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL


# ------------------------------------------------------------------------------ the helper


def test_atomic_file_and_dir_keep_the_old_version_on_an_exception(tmp_path):
    target = tmp_path / "a.txt"
    write_text(target, "old\n")
    with pytest.raises(RuntimeError), atomic_file(target) as f:
        f.write("half of the ne")
        raise RuntimeError("boom")
    assert target.read_text() == "old\n"
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "x").write_text("old")
    with pytest.raises(RuntimeError), atomic_dir(tmp_path / "d") as stage:
        (stage / "x").write_text("new")
        raise RuntimeError("boom")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "d"]  # nothing left beside
    assert (tmp_path / "d" / "x").read_text() == "old"


def test_atomic_dir_keeps_files_it_did_not_write(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "notes.txt").write_text("mine")
    (tmp_path / "d" / "x").write_text("old")
    with atomic_dir(tmp_path / "d") as stage:
        (stage / "x").write_text("new")
    assert (tmp_path / "d" / "notes.txt").read_text() == "mine"
    assert (tmp_path / "d" / "x").read_text() == "new"


def test_a_swap_killed_between_its_renames_is_undone_on_the_next_read(tmp_path):
    random_index(5).save(tmp_path / "idx")
    before = snapshot(tmp_path / "idx")
    # the state a kill between "old -> backup" and "new -> idx" leaves (pid 999999: gone)
    os.replace(tmp_path / "idx", tmp_path / ".idx.old-999999")
    assert len(EmbeddingIndex.load(tmp_path / "idx")) == 5
    assert snapshot(tmp_path / "idx") == before


# ------------------------------------------------------------------------------ index


def test_index_append_on_a_full_disk_keeps_the_index(tmp_path):
    """Case 3: `index build --append` on a nearly full disk cut embeddings and items.jsonl."""
    with small_disk(tmp_path / "disk", "256k") as disk:
        random_index(200).save(disk / "idx")
        before = snapshot(disk / "idx")
        fill(disk, leave=16_000)
        with pytest.raises(HyvlError, match="no space left on device"):
            EmbeddingIndex.load(disk / "idx").append(random_index(2000, seed=1)).save(disk / "idx")
        assert snapshot(disk / "idx") == before
        assert sorted(p.name for p in disk.iterdir()) == ["filler", "idx"]
        assert len(EmbeddingIndex.load(disk / "idx")) == 200


def test_index_save_failing_mid_write_keeps_the_index(tmp_path, monkeypatch):
    import safetensors.torch

    random_index(10).save(tmp_path / "idx")
    before = snapshot(tmp_path / "idx")

    def cut(tensors, filename, *a, **k):
        Path(filename).write_bytes(b"\x10\x00\x00")  # a cut header, then the writer dies
        raise RuntimeError("writer died")

    monkeypatch.setattr(safetensors.torch, "save_file", cut)
    with pytest.raises(RuntimeError, match="writer died"):
        random_index(30, seed=1).save(tmp_path / "idx")
    assert snapshot(tmp_path / "idx") == before


def test_index_append_killed_mid_write_keeps_the_index(tmp_path):
    random_index(10).save(tmp_path / "idx")
    before = snapshot(tmp_path / "idx")

    def hook(block):
        import safetensors.torch

        real = safetensors.torch.save_file

        def slow(tensors, filename, *a, **k):
            real(tensors, filename, *a, **k)
            with open(Path(filename).parent / "items.jsonl", "w") as f:
                f.write('{"kind": "ima')  # items.jsonl half written when the kill comes
            block()

        safetensors.torch.save_file = slow

    def append():
        EmbeddingIndex.load(tmp_path / "idx").append(random_index(20, seed=1)).save(
            tmp_path / "idx"
        )

    kill_mid_write(append, hook)
    assert snapshot(tmp_path / "idx") == before
    assert len(EmbeddingIndex.load(tmp_path / "idx")) == 10
    # the next write removes what the killed one left beside the index
    random_index(12, seed=2).save(tmp_path / "idx")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["idx"]


def lorentz_index(seed: int, n: int = 300, dim: int = 8) -> EmbeddingIndex:
    """Points on the hyperboloid (what the approximate backends search)."""
    from hyvl import lorentz

    g = torch.Generator().manual_seed(seed)
    emb = lorentz.exp_map0(torch.randn(n, dim, generator=g) * 0.3, 1.0)
    items = [{"kind": "image", "item": f"img{seed}_{i}.jpg"} for i in range(n)]
    return EmbeddingIndex(emb, items, {"geometry": "lorentz", "curv": 1.0, "embed_dim": dim})


QUERIES = torch.randn(6, 8, generator=torch.Generator().manual_seed(9)) * 0.3


def hnsw_search(directory: Path):
    from hyvl import lorentz

    queries = lorentz.exp_map0(QUERIES, 1.0)
    return EmbeddingIndex.load(directory).search(queries, 5, kind="image", backend="hnsw")


def ann_files(directory: Path) -> dict[str, str]:
    return {k: v for k, v in snapshot(directory).items() if k.startswith("ann-")}


def test_ann_index_on_a_full_disk_keeps_the_previous_one_loadable(tmp_path, monkeypatch, caplog):
    """A saved HNSW index rewritten for other embeddings on a full disk: the search still
    answers, the previous .faiss and its stamp stay whole, and they load again (no rebuild)
    once the index holds the embeddings they were built for."""
    import faiss

    with small_disk(tmp_path / "disk", "1m") as disk:
        idx = disk / "idx"
        idx.mkdir()
        (idx / "notes.txt").write_text("mine")  # a foreign file: saves keep the ANN files
        lorentz_index(0).save(idx)
        first = hnsw_search(idx)
        before = ann_files(idx)
        assert sorted(before) == ["ann-hnsw-image-m32.faiss", "ann-hnsw-image-m32.json"]

        lorentz_index(1).save(idx)  # other embeddings: the saved graph is stale, rebuilt
        fill(disk, leave=8_000)  # room for a part of the new .faiss only
        found = hnsw_search(idx)  # answered from the new embeddings despite the failed write
        assert len(found) == 6 and all(h["item"].startswith("img1_") for r in found for h in r)
        assert "ANN index not saved" in caplog.text and "no space left" in caplog.text
        assert ann_files(idx) == before
        assert not [p.name for p in idx.iterdir() if p.name.startswith(".")]

        (disk / "filler").unlink()
        lorentz_index(0).save(idx)

        def no_rebuild(*args, **kwargs):
            raise AssertionError("the HNSW index was rebuilt instead of loaded")

        monkeypatch.setattr(faiss, "IndexHNSWFlat", no_rebuild)
        assert hnsw_search(idx) == first


def test_ann_file_replaced_without_its_stamp_is_rebuilt_not_trusted(tmp_path, monkeypatch, caplog):
    """A failure between the .faiss write and its stamp's leaves a new file beside the old
    stamp; the stamp names its file's digest, so the file is rebuilt, not read as the old one.
    A .faiss cut short is rebuilt too (a warning, no crash)."""
    import hyvl.io

    idx = tmp_path / "idx"
    idx.mkdir()
    (idx / "notes.txt").write_text("mine")
    lorentz_index(0).save(idx)
    first = hnsw_search(idx)
    stamp = (idx / "ann-hnsw-image-m32.json").read_text()

    lorentz_index(1).save(idx)

    def stamp_fails(path, text, encoding="utf-8"):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(hyvl.io, "write_text", stamp_fails)
    hnsw_search(idx)  # writes the .faiss of seed 1, then fails on its stamp
    monkeypatch.undo()
    assert (idx / "ann-hnsw-image-m32.json").read_text() == stamp  # the old stamp, new file

    lorentz_index(0).save(idx)  # the old stamp's embeddings again, with seed 1's graph on disk
    caplog.clear()
    assert hnsw_search(idx) == first
    assert "is not the file ann-hnsw-image-m32.json describes; rebuilding it" in caplog.text

    faiss_file = idx / "ann-hnsw-image-m32.faiss"
    faiss_file.write_bytes(faiss_file.read_bytes()[:1000])  # cut short after the stamp
    caplog.clear()
    assert hnsw_search(idx) == first
    assert "rebuilding it" in caplog.text


# ------------------------------------------------------------------------------ export


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    # a small vocabulary and one block per tower: the export is 1 MB instead of 30
    small = {"text": {"vocab_size": 1000, "layers": 1}, "vision": {"depth": 1}}
    return hyvl.create_model("clip_tiny", **small).eval()


def test_export_failing_mid_write_keeps_the_old_export(tmp_path, monkeypatch, tiny):
    import safetensors.torch

    hyvl.save(tiny, tmp_path / "exp")
    before = snapshot(tmp_path / "exp")

    def cut(model, filename, *a, **k):
        Path(filename).write_bytes(b"\x00" * 100)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(safetensors.torch, "save_model", cut)
    with pytest.raises(HyvlError, match="no space left"):
        hyvl.save(tiny, tmp_path / "exp")
    assert snapshot(tmp_path / "exp") == before
    hyvl.load(tmp_path / "exp")


def test_export_killed_mid_write_keeps_the_old_export(tmp_path, tiny):
    hyvl.save(tiny, tmp_path / "exp")
    before = snapshot(tmp_path / "exp")

    def hook(block):
        import safetensors.torch

        def slow(model, filename, *a, **k):
            Path(filename).write_bytes(b"\x00" * 1000)
            block()

        safetensors.torch.save_model = slow

    kill_mid_write(lambda: hyvl.save(tiny, tmp_path / "exp"), hook)
    assert snapshot(tmp_path / "exp") == before
    model, _, _ = hyvl.load(tmp_path / "exp")
    assert torch.equal(model.visual_proj.weight, tiny.visual_proj.weight)


def test_export_on_a_full_disk_keeps_the_old_export(tmp_path, tiny):
    with small_disk(tmp_path / "disk", "8m") as disk:
        hyvl.save(tiny, disk / "exp")
        before = snapshot(disk / "exp")
        fill(disk, leave=100_000)
        with pytest.raises(HyvlError, match="no space left on device"):
            hyvl.save(tiny, disk / "exp")
        assert snapshot(disk / "exp") == before
        assert json.loads((disk / "exp" / "config.json").read_text())["format"] == "hyvl"


# ------------------------------------------------------------------------------ shards


def grounded_records(n: int, colour=(200, 30, 30)):
    from PIL import Image

    return [
        {
            "key": f"s{i:03d}",
            "image": Image.new("RGB", (40, 40), colour),
            "caption": f"scene {i}",
            "boxes": [{"bbox": [2, 2, 30, 30], "text": "a box"}],
        }
        for i in range(n)
    ]


def test_make_shards_killed_mid_write_keeps_shards_and_manifest(tmp_path):
    from hyvl.data import writer

    out = tmp_path / "shards"
    writer.write_shards(grounded_records(6), out, samples_per_shard=2, progress=False)
    before = snapshot(out)

    def hook(block):
        real, calls = writer._encode, []

        def slow(*a, **k):
            calls.append(1)
            if len(calls) == 5:  # two new shards written, the third half written
                block()
            return real(*a, **k)

        writer._encode = slow

    records = grounded_records(10, colour=(0, 0, 250))
    kill_mid_write(
        lambda: writer.write_shards(records, out, samples_per_shard=2, progress=False), hook
    )
    assert snapshot(out) == before
    manifest = json.loads((out / "shard-manifest.json").read_text())
    assert manifest["samples"] == 6 and len(list(out.glob("*.tar"))) == 3


def test_make_shards_on_a_full_disk_keeps_shards_and_manifest(tmp_path):
    from hyvl.data import writer

    with small_disk(tmp_path / "disk", "512k") as disk:
        writer.write_shards(grounded_records(4), disk / "s", samples_per_shard=2, progress=False)
        before = snapshot(disk / "s")
        fill(disk, leave=8_000)
        with pytest.raises(HyvlError, match="no space left on device"):
            writer.write_shards(
                grounded_records(40), disk / "s", samples_per_shard=2, progress=False
            )
        assert snapshot(disk / "s") == before
        assert sorted(p.name for p in disk.iterdir()) == ["filler", "s"]


# ------------------------------------------------------------------------------ demo data


def small_demo(out, **kw):
    from hyvl.data.demo import make_demo
    from hyvl.data.writer import write_demo

    sizes = dict(train_samples=6, val_samples=2, zeroshot_per_class=1, retrieval_images=3)
    return write_demo(make_demo, out, **sizes, **kw)


def test_demo_data_killed_mid_write_keeps_the_previous_data(tmp_path):
    from hyvl.data import demo

    small_demo(tmp_path / "data", seed=0)
    before = snapshot(tmp_path / "data")

    def hook(block):
        real, calls = demo.make_scene, []

        def slow(*a, **k):
            calls.append(1)
            if len(calls) == 9:  # shards and the zero-shot folder written, retrieval half done
                block()
            return real(*a, **k)

        demo.make_scene = slow

    kill_mid_write(lambda: small_demo(tmp_path / "data", seed=1), hook)
    assert snapshot(tmp_path / "data") == before
    small_demo(tmp_path / "data", seed=1)  # a re-run replaces demo data and cleans up
    assert snapshot(tmp_path / "data") != before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]


def test_demo_data_failing_mid_write_keeps_the_previous_data(tmp_path, monkeypatch):
    from hyvl.data import demo

    small_demo(tmp_path / "data", seed=0)
    before = snapshot(tmp_path / "data")
    monkeypatch.setattr(demo, "hierarchy_edges", lambda: 1 / 0)  # fails at the last file
    with pytest.raises(ZeroDivisionError):
        small_demo(tmp_path / "data", seed=1)
    assert snapshot(tmp_path / "data") == before


def test_demo_data_on_a_full_disk_keeps_the_previous_data(tmp_path):
    with small_disk(tmp_path / "disk", "2m") as disk:
        small_demo(disk / "data", seed=0)
        before = snapshot(disk / "data")
        fill(disk, leave=20_000)
        with pytest.raises(HyvlError, match="no space left on device"):
            small_demo(disk / "data", seed=1)
        assert snapshot(disk / "data") == before
        assert sorted(p.name for p in disk.iterdir()) == ["data", "filler"]
