"""Everything that needs two real processes (torchrun, gloo, CPU), in ONE torchrun launch: each
launch costs every process its imports (torch, open_clip: ~7 s of CPU) and torchrun its own, so
the launch does the work of several, in this order, and each test reads what it left:

- evaluation: every library evaluation and index build on the demo world equals one process's,
  exactly; then ``hyvl eval zeroshot``, ``hyvl index build``, a 2-step ``hyvl train`` with
  periodic evaluation and ``hyvl eval suite`` on a root of every layout (test_eval_suite.py's
  world), as the command line runs them, each process's printout kept in its own files;
- training gradients: two processes compute the gradients of one process on the combined batch,
  with and without GradCache accumulation, with LoRA adapters (peft, train.lora) in the text
  tower and the image projection frozen (train.freeze);
- preemption (last: it ends the launch): a SIGTERM to ONE of the two processes stops both after
  the same step, with one checkpoint of that step, and torchrun reports the exit code 75.

The same file is the worker script: ``tests/test_torchrun.py WORLD OUT SUITE_EXPORT SUITE_ROOT``
under torchrun (``accelerate launch --cpu --num_processes 2`` starts only one process, see
docs/pitfalls.md). Every one-process reference is computed in the test's own process, on one
thread like each torchrun process: only the multi-process runs need a process boundary.
"""

from __future__ import annotations

import json
import os
import signal
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
from test_eval_suite import suite_world

ROOT = Path(__file__).resolve().parents[1]

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


def cli_commands(world: Path, out: Path, export: Path, root: Path) -> dict[str, list[str]]:
    """The commands the launch runs after the library calls: name -> hyvl arguments."""
    evaluate = ["eval", "zeroshot", "--checkpoint", str(world / "export"), "--batch-size", "5"]
    evaluate += ["--data", str(world / "zeroshot"), "--device", "cpu"]
    evaluate += ["--json", str(out / "zeroshot.json")]
    build = ["index", "build", "--checkpoint", str(world / "export"), "--device", "cpu"]
    build += ["--images", str(world / "val" / "*.tar"), "--texts", str(world / "texts.txt")]
    build += ["--batch-size", str(VAL_BATCH), "--out", str(out / "idx")]
    suite = suite_command(export, root, out / "suite")
    return {"eval": evaluate, "index": build, "train": train_command(world, out), "suite": suite}


def suite_command(export: Path, root: Path, out: Path) -> list[str]:
    """``hyvl eval suite`` on test_eval_suite.py's root (every layout, damaged images,
    retrieval) in batches of 3: uneven shares (EuroSAT's 22 files: 12 rows in one process, 10
    in the other); JSON, markdown and prototype cache into OUT."""
    args = ["eval", "suite", "--checkpoint", str(export), "--root", str(root), "--device", "cpu"]
    args += ["--batch-size", "3", "--json", str(out / "s.json"), "--markdown", str(out / "s.md")]
    return [*args, "--cache-dir", str(out / "cache")]


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
    cmd = ["train", "--config", str(ROOT / "configs" / "meru_tiny.yaml")]
    cmd += ["--output-dir", str(out / "run"), *(f"{k}={v}" for k, v in overrides.items())]
    return [*cmd, "--json", str(out / "summary.json")]


GLOBAL_BATCH = 8
FROZEN = ("visual_proj.",)
ACCUMS = (1, 2)
# hycoclip_tiny exercises every embedding kind (images, texts, box crops, box texts).
GRADIENT_OVERRIDES = [
    "model=hycoclip_tiny",
    "model.vision.image_size=32",
    "objective.kind=hycoclip",
    "train.cpu=true",
    f"train.batch_size={GLOBAL_BATCH}",
    # LoRA under DDP: adapters in the text tower (its nn.MultiheadAttention and MLP), and the
    # lift (projections, alphas, curvature, logit scale) in full, so both kinds of gradient
    # are compared
    "train.lora.rank=4",
    "train.lora.towers=[textual]",
    "train.lora.dropout=0",
    # train.freeze under DDP: the frozen parameters are left out of the reduction
    f"train.freeze=[{','.join(FROZEN)}]",
]


def global_batch(model, tokenizer, k=1):
    """A fixed batch every process can rebuild: (images, tokens, box_images, box_tokens)."""
    g = torch.Generator().manual_seed(0)
    size = model.image_size
    images = torch.rand(GLOBAL_BATCH, 3, size, size, generator=g)
    box_images = torch.rand(GLOBAL_BATCH * k, 3, size, size, generator=g)
    tokens = tokenizer([f"a photo of object number {i} on a table" for i in range(GLOBAL_BATCH)])
    box_tokens = tokenizer([f"object {i}" for i in range(GLOBAL_BATCH * k)])
    return images, tokens, box_images, box_tokens


def gradients(out_dir: Path) -> None:
    """Each process's share of :func:`global_batch` through hyvl's training step (DDP when
    there are several); the main process writes the gradients and losses into OUT_DIR."""
    from types import SimpleNamespace

    from safetensors.torch import save_file

    from hyvl.config import load_run_config
    from hyvl.train.finetune import freeze
    from hyvl.train.state import build_model_and_objective, make_accelerator
    from hyvl.train.step import TrainModule, forward_backward

    out_dir.mkdir(exist_ok=True)
    cfg = load_run_config(None, GRADIENT_OVERRIDES)
    accelerator = make_accelerator(cfg, out_dir)
    model, tokenizer, objective = build_model_and_objective(cfg)
    core = TrainModule(model, objective)
    assert freeze(core, cfg.train) == ["model.visual_proj.weight"]  # as build_state does
    module = accelerator.prepare(core)
    rank, world = accelerator.process_index, accelerator.num_processes
    per = GLOBAL_BATCH // world
    images, tokens, box_images, box_tokens = global_batch(model, tokenizer)
    rows = slice(rank * per, (rank + 1) * per)
    local = SimpleNamespace(
        images=images[rows],
        tokens=tokens[rows],
        box_images=box_images[rows],
        box_tokens=box_tokens[rows],
    )
    for accum in ACCUMS:
        result = forward_backward(accelerator, module, local, grad_accum=accum)
        grads = {
            n: p.grad.detach().clone().contiguous()
            for n, p in core.named_parameters()
            if p.grad is not None
        }
        if accelerator.is_main_process:
            save_file(grads, str(out_dir / f"grads_w{world}_k{accum}.safetensors"))
            (out_dir / f"loss_w{world}_k{accum}.json").write_text(json.dumps(result.losses))
        core.zero_grad(set_to_none=True)
    accelerator.wait_for_everyone()


SIGNAL_AT_STEP = 2


def write_preempt_shard(out: Path) -> None:
    write_tar(
        out / "preempt.tar",
        [(f"s{i}", {"jpg": jpeg((16, 16), (20 * i, 60, 90)), "txt": f"picture {i}".encode()})
         for i in range(16)],
    )  # fmt: skip


def preempt_command(out: Path) -> list[str]:
    """``hyvl train`` of 50 steps on OUT/preempt.tar into OUT/preempt (summary in
    OUT/preempt_summary.json); the launch signals one process during step 2."""
    overrides = {
        "data.train_shards": str(out / "preempt.tar"),
        "data.workers": 0,
        "data.shuffle_buffer": 1,
        "data.boxes_per_sample": 0,
        "objective.kind": "meru",
        "model.vision.image_size": 32,
        "model.vision.depth": 1,
        "model.text.layers": 1,
        "train.cpu": "true",
        "train.batch_size": 4,
        "train.max_steps": 50,
        "train.checkpoint_every": 100,
        "train.eval_every": 0,
        "eval.zeroshot": "",
        "eval.retrieval": "",
    }
    cmd = ["train", "--config", str(ROOT / "configs" / "meru_tiny.yaml")]
    cmd += ["--output-dir", str(out / "preempt"), *(f"{k}={v}" for k, v in overrides.items())]
    return [*cmd, "--json", str(out / "preempt_summary.json")]


def signalling_rank_1():
    """Make the process of rank 1 send itself SIGTERM while it trains step SIGNAL_AT_STEP (the
    fault is injected here, not by a hook in hyvl)."""
    import hyvl.train.loop as loop

    real = loop.optimizer_step

    def signalling(state, *args, **kwargs):
        if state.step == SIGNAL_AT_STEP - 1 and state.accelerator.process_index == 1:
            os.kill(os.getpid(), signal.SIGTERM)
        return real(state, *args, **kwargs)

    loop.optimizer_step = signalling


def run_printing_to_files(main, name: str, args: list[str], rank: int, out: Path) -> int:
    """``main(args)`` with this process's printout in ``stdout_{name}_rank{rank}.txt`` (and
    ``stderr_...``); returns its exit code."""
    with (
        open(out / f"stdout_{name}_rank{rank}.txt", "w") as printed,
        open(out / f"stderr_{name}_rank{rank}.txt", "w") as said,
        redirect_stdout(printed),
        redirect_stderr(said),
    ):
        return main(args)


def two_process_checks(world: Path, out: Path, export: Path, root: Path) -> None:
    """What each torchrun process runs: :func:`worker`, :func:`gradients`, the commands of
    :func:`cli_commands` through hyvl's ``main`` (what ``python -m hyvl`` calls), then the
    preempted run of :func:`preempt_command`, whose exit code (75) ends the process."""
    from accelerate import PartialState

    from hyvl.cli.main import main

    state = PartialState(cpu=True)
    rank = state.process_index
    worker(world, out)
    gradients(out / "grads")
    # Each command closes the process group when it ends, as it must in its own launch; here
    # the group is closed once, after the last (accelerate's state would not join a new one).
    close = PartialState.destroy_process_group
    PartialState.destroy_process_group = lambda self, group=None: None
    try:
        for name, args in cli_commands(world, out, export, root).items():
            code = run_printing_to_files(main, name, args, rank, out)
            if code != 0:
                sys.exit(f"hyvl {name} exited {code}")
        (out / f"commands_done_rank{rank}").touch()
        signalling_rank_1()
        code = run_printing_to_files(main, "preempt", preempt_command(out), rank, out)
    finally:
        PartialState.destroy_process_group = close
    state.destroy_process_group()
    sys.exit(code)  # what a batch script requeues on


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
def suite(tmp_path_factory):
    """test_eval_suite.py's export and root: (export, root)."""
    export, *_, root, _, _ = suite_world(tmp_path_factory)
    return export, root


@pytest.fixture(scope="module")
def launch(world, suite, tmp_path_factory):
    """The one launch of 2 processes (two_process_checks): its output folder and the
    finished torchrun process."""
    out = tmp_path_factory.mktemp("two")
    write_training_shards(out)
    write_preempt_shard(out)
    cmd = [*TORCHRUN, "2", str(Path(__file__).resolve()), str(world), str(out)]
    cmd += [str(p) for p in suite]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # what torchrun gives each process
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    return out, done


@pytest.fixture(scope="module")
def two(launch):
    """The folder where the launch wrote its results, once every command before the
    preempted run succeeded in both processes."""
    out, done = launch
    finished = [(out / f"commands_done_rank{r}").exists() for r in (0, 1)]
    assert finished == [True, True], done.stderr[-3000:]
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


def test_torchrun_two_processes_equal_one_and_write_once(suite, two, tmp_path):
    """``hyvl eval suite`` in 2 processes on test_eval_suite.py's root (every layout, the
    damaged images, retrieval): the JSON equals a one-process run's (values, sample and skip
    counts) and only the first process reports and writes."""
    from hyvl.cli.main import main

    with one_thread():  # as each torchrun process runs: the same floats, bit for bit
        assert main(suite_command(*suite, tmp_path / "one")) == 0
    one_res = json.loads((tmp_path / "one" / "s.json").read_text())
    two_res = json.loads((two / "suite" / "s.json").read_text())
    assert set(one_res["datasets"]) == {"mnist", "clevr", "eurosat", "stl10", "pcam", "demo"}
    assert one_res["skipped"] == {"corrupt_image": 2} and "coco" in one_res["retrieval"]
    assert two_res == one_res
    assert (two / "suite" / "s.md").read_text() == (tmp_path / "one" / "s.md").read_text()
    # one process printed (the log lines, the table, the skips) and wrote the cache entries
    stdout = printed(two, "stdout", "suite")
    assert stdout.count("mnist: torchvision at") == 1
    assert stdout.count("suite: ") == 1 and stdout.count("skipped: 2 (") == 1
    caches = [
        sorted(p.name for p in (d / "cache").iterdir()) for d in (tmp_path / "one", two / "suite")
    ]
    assert caches[0] == caches[1] and len(caches[1]) == 6


def test_two_processes_match_one_process_on_the_combined_batch(two, tmp_path):
    from safetensors.torch import load_file

    gradients(tmp_path)  # the one-process reference needs no process of its own
    reference = load_file(str(tmp_path / "grads_w1_k1.safetensors"))
    ref_loss = json.loads((tmp_path / "loss_w1_k1.json").read_text())
    assert len(reference) > 10 and all(torch.isfinite(g).all() for g in reference.values())
    adapters = [n for n in reference if "lora_B" in n]
    assert adapters and all(n.startswith("model.textual.") for n in adapters)
    assert any(reference[n].abs().sum() > 0 for n in adapters)  # B starts at 0, its grad not
    assert not any(n.startswith("model.textual.") and "lora_" not in n for n in reference)
    assert not any(n.startswith(tuple("model." + f for f in FROZEN)) for n in reference)
    assert "model.visual_alpha" in reference and "model.textual_proj.weight" in reference
    assert not any(n.startswith("model.visual.") for n in reference)  # no adapters there
    for world, accum in [(1, 2), (2, 1), (2, 2)]:
        folder = tmp_path if world == 1 else two / "grads"
        grads = load_file(str(folder / f"grads_w{world}_k{accum}.safetensors"))
        assert grads.keys() == reference.keys(), (world, accum)
        for name, grad in grads.items():
            torch.testing.assert_close(
                grad, reference[name], rtol=1e-4, atol=1e-6, msg=f"{name} w{world} k{accum}"
            )
        losses = json.loads((folder / f"loss_w{world}_k{accum}.json").read_text())
        assert losses["loss"] == pytest.approx(ref_loss["loss"], rel=1e-5)


def test_preempt_signal_to_one_torchrun_rank_stops_every_rank_at_one_step(launch, two):
    out, done = launch
    # torchrun reports its workers' exit code (75: checkpoint written, run again) and fails
    assert done.returncode != 0 and "exitcode  : 75" in done.stderr, done.stderr[-3000:]
    said = printed(out, "stderr", "preempt")
    assert f"stopped by SIGTERM at step {SIGNAL_AT_STEP}/50" in said, said[-3000:]
    run = out / "preempt"
    checkpoints = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert checkpoints == [f"step_{SIGNAL_AT_STEP:07d}"]  # one, of the step both reached
    meta = json.loads((run / "checkpoints" / checkpoints[0] / "meta.json").read_text())
    assert meta["step"] == SIGNAL_AT_STEP and len(meta["processes"]) == 2
    assert {p.name for p in (run / "checkpoints" / checkpoints[0]).glob("rng_*.pt")} == {
        "rng_0.pt",
        "rng_1.pt",
    }
    assert not (run / ".hyvl-lock").exists()
    # what a batch script requeues on (torchrun's own exit code is 1 for any failure)
    summary = json.loads((out / "preempt_summary.json").read_text())
    assert summary["interrupted"]["step"] == SIGNAL_AT_STEP


if __name__ == "__main__":
    two_process_checks(*(Path(a) for a in sys.argv[1:5]))
