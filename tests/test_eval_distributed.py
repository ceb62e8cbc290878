"""Evaluation shared by 2 processes (torchrun + gloo) == evaluation in 1 process, exactly.

The same file is the worker script: under torchrun, ``tests/test_eval_distributed.py WORLD OUT``
runs every evaluation on the demo world in each process (rank 0 writes the results and the raw
embeddings, every rank writes what it got), then ``hyvl eval zeroshot``, ``hyvl index build`` and
a 2-step ``hyvl train`` with periodic evaluation as the command line runs them, each process's
printout kept in its own files. One launch for
all of it: each launch costs every process its imports (torch, open_clip: ~7 s of CPU). The
one-process reference is the same function called in the test's own process, on one thread like
each torchrun process: only the multi-process runs need a process boundary.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from contextlib import contextmanager, redirect_stderr, redirect_stdout
from pathlib import Path

import pytest
import torch

import hyvl
from hyvl.data.demo import make_demo
from hyvl.search.index import EmbeddingIndex

from conftest import jpeg, write_tar

# Batch sizes chosen so the shares are uneven: 24 zero-shot images in batches of 5 (3 + 2
# batches), 10 retrieval images in batches of 3 (2 + 2, the last one short), 20 captions in
# one text batch (rank 1 has no text rows at all), 30 val samples in batches of 4 (4 + 4).
ZS_BATCH, RT_BATCH, VAL_BATCH = 5, 3, 4


def worker(world: Path, out: Path) -> None:
    from safetensors.torch import save_file
    from torchvision.datasets import ImageFolder

    from hyvl.evaluation import evaluate_hierarchy, evaluate_retrieval, evaluate_zeroshot
    from hyvl.evaluation.embed import Shard, embed_images, embed_texts
    from hyvl.search.index import build_index

    state = None
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        from accelerate import PartialState

        state = PartialState(cpu=True)
    shard = Shard.from_accelerate(state) if state else Shard()
    model, preprocess, tokenizer = hyvl.load(world / "export")
    results = {
        "zeroshot": evaluate_zeroshot(
            model, preprocess, tokenizer, world / "zeroshot", batch_size=ZS_BATCH, shard=shard
        ),
        "retrieval_coco": evaluate_retrieval(
            model,
            preprocess,
            tokenizer,
            world / "retrieval" / "captions.json",
            batch_size=RT_BATCH,
            shard=shard,
        ),
        "retrieval_shards": evaluate_retrieval(
            model, preprocess, tokenizer, world / "val" / "*.tar", batch_size=VAL_BATCH, shard=shard
        ),
        "hierarchy": evaluate_hierarchy(
            model,
            preprocess,
            tokenizer,
            world / "zeroshot",
            world / "hierarchy.tsv",
            batch_size=ZS_BATCH,
            shard=shard,
        ),
    }
    folder = ImageFolder(str(world / "zeroshot"), transform=preprocess)
    images, labels = embed_images(
        model, shard.batches(folder, ZS_BATCH), shard=shard, desc="zero-shot images"
    )
    texts = embed_texts(model, tokenizer, [f"caption {i}" for i in range(9)], 2, shard=shard)
    # indexes: an image folder + a text file, and shards (keys and captions gathered too)
    folder_index = build_index(
        world / "export", world / "retrieval" / "images", world / "texts.txt", RT_BATCH, shard=shard
    )
    shards_index = build_index(
        world / "export", world / "val" / "*.tar", world / "texts.txt", VAL_BATCH, shard=shard
    )
    results["index_items"] = {"folder": folder_index.items, "shards": shards_index.items}
    (out / f"results_rank{shard.rank}.json").write_text(json.dumps(results))
    if shard.is_main:
        save_file(
            {
                "images": images,
                "labels": labels,
                "texts": texts,
                "folder_index": folder_index.embeddings,
                "shards_index": shards_index.embeddings,
            },
            str(out / "embeddings.safetensors"),
        )


def cli_commands(world: Path, out: Path) -> dict[str, list[str]]:
    """The two commands the launch runs after the library calls: name -> hyvl arguments."""
    evaluate = ["eval", "zeroshot", "--checkpoint", str(world / "export"), "--batch-size", "5"]
    evaluate += ["--data", str(world / "zeroshot"), "--device", "cpu"]
    evaluate += ["--json", str(out / "zeroshot.json")]
    build = ["index", "build", "--checkpoint", str(world / "export"), "--device", "cpu"]
    build += ["--images", str(world / "val" / "*.tar"), "--texts", str(world / "texts.txt")]
    build += ["--batch-size", str(VAL_BATCH), "--out", str(out / "idx")]
    return {"eval": evaluate, "index": build, "train": train_command(world, out)}


# training shard -> indices of its corrupt samples: each process reads one of the two shards
CORRUPT = {0: [1], 1: [2, 5]}


def write_training_shards(out: Path) -> None:
    for shard, bad in CORRUPT.items():
        samples = [
            (
                f"s{shard}_{i}",
                {
                    "jpg": b"not a jpeg" if i in bad else jpeg((16, 16), (30 * i, 60, 90)),
                    "txt": f"picture {i} of shard {shard}".encode(),
                },
            )
            for i in range(8)
        ]
        write_tar(out / f"part-{shard}.tar", samples)


def train_command(world: Path, out: Path) -> list[str]:
    """``hyvl train`` on write_training_shards' shards with periodic evaluation on the world,
    into OUT/run (summary in OUT/summary.json)."""
    root = Path(__file__).resolve().parents[1]
    overrides = {
        # 2 processes x 4 samples x 2 steps: each reads its own shard exactly once (finite
        # mode, no shuffle, at most 2 bad samples in a batch of 4)
        "data.train_shards": f"{out}/part-{{0..1}}.tar",
        "data.resampled": "false",
        "data.shuffle_buffer": 1,
        "data.workers": 0,
        "model.vision.image_size": 32,
        "model.vision.depth": 2,
        "model.text.layers": 2,
        "train.cpu": "true",
        "train.batch_size": 8,
        "train.max_steps": 2,
        "train.warmup_steps": 1,
        "train.checkpoint_every": 2,
        "train.eval_every": 2,
        "eval.zeroshot": str(world / "zeroshot"),
        "eval.retrieval": str(world / "retrieval" / "captions.json"),
        "eval.batch_size": 5,
    }
    cmd = ["train", "--config", str(root / "configs" / "meru_tiny.yaml")]
    cmd += ["--output-dir", str(out / "run"), *(f"{k}={v}" for k, v in overrides.items())]
    return [*cmd, "--json", str(out / "summary.json")]


def two_process_checks(world: Path, out: Path) -> None:
    """What each torchrun process runs: :func:`worker`, then the commands of
    :func:`cli_commands` through hyvl's ``main`` (what ``python -m hyvl`` calls), this
    process's printout of each in ``stdout_{name}_rank{rank}.txt`` (and ``stderr_...``)."""
    from accelerate import PartialState

    from hyvl.cli.main import main

    state = PartialState(cpu=True)
    worker(world, out)
    # Each command closes the process group when it ends, as it must in its own launch; here
    # the group is closed once, after the last (accelerate's state would not join a new one).
    close = PartialState.destroy_process_group
    PartialState.destroy_process_group = lambda self, group=None: None
    try:
        for name, args in cli_commands(world, out).items():
            rank = state.process_index
            with (
                open(out / f"stdout_{name}_rank{rank}.txt", "w") as printed,
                open(out / f"stderr_{name}_rank{rank}.txt", "w") as said,
                redirect_stdout(printed),
                redirect_stderr(said),
            ):
                code = main(args)
            if code != 0:
                sys.exit(f"hyvl {name} exited {code}")
    finally:
        PartialState.destroy_process_group = close
    state.destroy_process_group()


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = make_demo(
        tmp_path_factory.mktemp("world"),
        train_samples=64,
        val_samples=30,
        zeroshot_per_class=2,
        retrieval_images=10,
        samples_per_shard=16,
    )
    torch.manual_seed(0)
    hyvl.save(hyvl.create_model("meru_tiny"), root / "export")
    nodes = {
        n for line in (root / "hierarchy.tsv").read_text().splitlines() for n in line.split("\t")
    }
    (root / "texts.txt").write_text("\n".join(sorted(nodes)) + "\n")
    return root


def _run(cmd, **kw):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # what torchrun gives each process
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env, **kw)
    assert out.returncode == 0, out.stderr[-3000:]
    return out


TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node"]


@contextmanager
def one_thread():
    """Run in this process as a torchrun process runs (OMP_NUM_THREADS=1), so that the
    references are bit-comparable."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def one(world, tmp_path_factory):
    """The one-process results and embeddings (the reference of every comparison)."""
    from safetensors.torch import load_file

    out = tmp_path_factory.mktemp("one")
    with one_thread():
        worker(world, out)
    return json.loads((out / "results_rank0.json").read_text()), load_file(
        str(out / "embeddings.safetensors")
    )


@pytest.fixture(scope="module")
def two(world, tmp_path_factory):
    """The folder where the launch of 2 processes wrote its results (two_process_checks)."""
    out = tmp_path_factory.mktemp("two")
    write_training_shards(out)
    _run([*TORCHRUN, "2", str(Path(__file__).resolve()), str(world), str(out)])
    return out


def test_two_processes_give_the_one_process_results_exactly(one, two):
    from safetensors.torch import load_file

    want, embeddings = one
    assert want["zeroshot"]["num_samples"] == 24 and want["retrieval_coco"]["num_texts"] == 20
    assert want["retrieval_shards"]["num_images"] == 30
    shards_items = want["index_items"]["shards"]
    assert len(shards_items) == 30 + 18 and shards_items[0]["caption"]  # val + hierarchy texts
    assert len(want["index_items"]["folder"]) == 10 + 18  # 10 images and 18 hierarchy texts
    for rank in (0, 1):  # every process returns the whole result, not its share's
        got = json.loads((two / f"results_rank{rank}.json").read_text())
        assert got == want, rank

    got = load_file(str(two / "embeddings.safetensors"))
    assert embeddings["images"].shape == (24, 128) and embeddings["texts"].shape[0] == 9
    assert embeddings["folder_index"].shape == (28, 128)
    assert embeddings["shards_index"].shape == (48, 128)
    labels = embeddings["labels"].tolist()
    assert labels == sorted(labels)  # ImageFolder order kept
    for name in embeddings:  # the same rows, in the same order, bit for bit
        assert torch.equal(embeddings[name], got[name]), name


def test_cli_two_processes_print_once_and_write_the_one_process_results(one, two):
    want, embeddings = one
    assert json.loads((two / "zeroshot.json").read_text()) == want["zeroshot"]
    # the table, printed by the main process alone
    assert (two / "stdout_eval_rank0.txt").read_text().count("mean_per_class") == 1
    assert "mean_per_class" not in (two / "stdout_eval_rank1.txt").read_text()

    assert (two / "stdout_index_rank0.txt").read_text().count("index ") == 1  # printed once
    assert "index " not in (two / "stdout_index_rank1.txt").read_text()
    index = EmbeddingIndex.load(two / "idx")
    assert index.items == want["index_items"]["shards"]
    assert torch.equal(index.embeddings, embeddings["shards_index"])


def printed(two: Path, stream: str, name: str) -> str:
    """What both processes printed on ``stream`` during command ``name`` (rank 0's first)."""
    return "".join((two / f"{stream}_{name}_rank{r}.txt").read_text() for r in (0, 1))


def test_periodic_eval_in_two_process_training_is_the_eval_of_its_export(world, two):
    """Training's periodic evaluation is shared by the processes and equals ``hyvl eval``;
    the samples the processes skipped in their own shards are all counted."""
    out = two / "run"
    stdout, stderr = printed(two, "stdout", "train"), printed(two, "stderr", "train")
    # skipped samples are every process's (the main one alone read only some of them), in the
    # summary, metrics.jsonl and the checkpoint, which also keeps each process's own counts
    total = sum(len(bad) for bad in CORRUPT.values())
    summary = json.loads((two / "summary.json").read_text())
    assert summary["skipped"] == {"corrupt_image": total}
    assert f"skipped samples: corrupt_image {total}" in stdout
    last = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    assert last["step"] == 2 and last["skipped_samples"] == total
    meta = json.loads((out / "checkpoints" / "step_0000002" / "meta.json").read_text())
    mine = [p["skipped"].get("corrupt_image", 0) for p in meta["processes"]]
    assert len(mine) == 2 and all(n > 0 for n in mine) and sum(mine) == total
    assert meta["skipped"] == {"corrupt_image": total}

    lines = (out / "eval.jsonl").read_text().splitlines()
    assert len(lines) == 1  # written once (by the main process), at step 2
    periodic = json.loads(lines[0])
    assert periodic["step"] == 2
    assert periodic["zeroshot"]["num_samples"] == 24  # all of it, not one process's share
    # per family, from the world's hierarchy.tsv beside its zero-shot folder
    assert set(periodic["zeroshot"]["per_family"]) == {"round shape", "polygon"}
    # the end of the run shows (and its summary holds) that evaluation and where it ran
    assert summary["eval"] == periodic and "last evaluation (step 2" in stdout
    assert "family 'polygon' top-1 %" in stdout
    assert summary["runtime"]["world_size"] == 2 and "(CPU), fp32, 2 processes" in stderr
    assert periodic["retrieval"]["num_texts"] == 20

    # The export written at step 2 holds the weights that were evaluated: `hyvl eval` of it
    # (here in this process, as one process runs it) gives the same numbers.
    from hyvl.evaluation import evaluate_retrieval, evaluate_zeroshot

    model, preprocess, tokenizer = hyvl.load(out)
    with one_thread():
        zeroshot = evaluate_zeroshot(model, preprocess, tokenizer, world / "zeroshot", batch_size=5)
        retrieval = evaluate_retrieval(
            model, preprocess, tokenizer, world / "retrieval" / "captions.json", batch_size=5
        )
    assert zeroshot == periodic["zeroshot"]
    assert retrieval == periodic["retrieval"]


if __name__ == "__main__":
    two_process_checks(Path(sys.argv[1]), Path(sys.argv[2]))
