"""Issue 14, the trainer's side: fail before the first step, never spin, never lose a file.

Each test names the numbered case of the issue it reproduces. Everything runs in this process
on a tiny model and data made here (the kill -9 test with a real process is in test_train.py).
"""

import json
import logging
import os
import re
import shutil
from pathlib import Path

import pytest

from hyvl.cli.main import main
from hyvl.config import DataConfig, TextConfig, load_run_config
from hyvl.data.pipeline import build_train_loader
from hyvl.errors import DataError
from hyvl.models.tokenizer import get_tokenizer
from hyvl.train import checkpoint as ckpt
from hyvl.train.optim import lr_factor

from conftest import jpeg, write_tar

ROOT = Path(__file__).resolve().parents[1]
TOKENIZER = get_tokenizer(TextConfig(context_length=16))
BATCH = 4


def plain(key, i):
    return (
        key,
        {"jpg": jpeg((32, 32), (i * 37 % 255, 80, 160)), "txt": f"a picture number {i}".encode()},
    )


def grounded(key, box):
    meta = {"caption": "a red square", "boxes": [{"bbox": box, "text": "square"}]}
    return (key, {"jpg": jpeg((32, 32)), "json": json.dumps(meta).encode()})


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    """good.tar: blocks of 4 samples (one per batch), blocks 1 and 4 all corrupt."""
    root = tmp_path_factory.mktemp("shards")
    samples = []
    for block in range(12):
        for j in range(BATCH):
            i = block * BATCH + j
            if block in (1, 4):
                samples.append((f"s{i:03d}", {"jpg": b"not a jpeg", "txt": b"broken"}))
            else:
                samples.append(plain(f"s{i:03d}", i))
    write_tar(root / "good.tar", samples)
    write_tar(root / "nobox.tar", [plain(f"p{i}", i) for i in range(10)])
    write_tar(root / "smallbox.tar", [grounded(f"g{i}", [0, 0, 8, 8]) for i in range(10)])
    (root / "not_a_tar.tar").write_bytes(b"this is not a tar archive\n" * 100)
    return root


def overrides(data, **extra):
    values = {
        "model": "meru_tiny",
        "objective.kind": "meru",
        "data.train_shards": str(data),
        "data.boxes_per_sample": 0,
        "data.resampled": "false",
        "data.workers": 0,
        "data.shuffle_buffer": 0,
        "model.vision.image_size": 32,
        "model.vision.depth": 1,
        "model.text.layers": 1,
        "train.batch_size": BATCH,
        "train.max_steps": 4,
        "train.warmup_steps": 1,
        "train.checkpoint_every": 2,
        "train.keep_last": 3,
        "train.log_every": 1,
        "train.cpu": "true",
        "train.eval_every": 0,
        "eval.zeroshot": "",
        "eval.retrieval": "",
    }
    values.update(extra)
    return [f"{k}={v}" for k, v in values.items()]


# a recipe that needs a box per sample, dropping boxes under 32 px
HYCOCLIP = {
    "model": "hycoclip_tiny",
    "objective.kind": "hycoclip",
    "data.boxes_per_sample": 1,
    "data.min_box_size": 32,
}


def train_cli(out, args, *flags, config="meru_tiny.yaml"):
    config = str(ROOT / "configs" / config)
    return main(["train", "--config", config, "--output-dir", str(out), *flags, *args])


def metrics(out):
    return [json.loads(line) for line in (Path(out) / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def reference(shards, tmp_path_factory):
    """An uninterrupted 4-step run through the CLI (with --json); its files are copied per test."""
    out = tmp_path_factory.mktemp("ref") / "run"
    summary = out.parent / "summary.json"
    assert train_cli(out, overrides(shards / "good.tar"), "--json", str(summary)) == 0
    return out, json.loads(summary.read_text())


# ---- case 1 and 2: preflight, before any model is built ----------------------------------


@pytest.mark.parametrize(
    "shard,extra,expected",
    [
        ("/nonexistent/x.tar", {}, "shard /nonexistent/x.tar does not exist"),
        ("not_a_tar.tar", {}, "no sample could be read"),
        ("nobox.tar", HYCOCLIP, "no_usable_box"),
        ("nobox.tar", {**HYCOCLIP, "data.resampled": "true"}, "no_usable_box"),
        ("smallbox.tar", HYCOCLIP, "lower data.min_box_size"),
    ],
)
def test_case1_unusable_data_fails_at_preflight_in_one_line(
    shards, tmp_path, capsys, shard, extra, expected
):
    out = tmp_path / "out"
    code = train_cli(out, overrides(shards / shard, **extra))
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert expected in err and "data.train_shards" in err and "\n" not in err, err
    assert not out.exists()  # nothing was built or written
    if shard == "smallbox.tar":  # how many boxes were dropped, by which rule
        assert "box_too_small': 10" in err and "data.min_box_size=32" in err


def test_missing_tracker_package_fails_at_start(shards, tmp_path, capsys):
    code = train_cli(
        tmp_path / "o", overrides(shards / "good.tar", **{"train.trackers": "[wandb]"})
    )
    err = capsys.readouterr().err
    assert code == 2 and "needs the 'wandb' package" in err
    assert not (tmp_path / "o").exists()


# ---- case 1: no unbounded loop in the stream itself (preflight bypassed) ------------------


def stream(spec, *, k=0, resampled=True, workers=0, start=0):
    cfg = DataConfig(
        train_shards=str(spec),
        workers=workers,
        resampled=resampled,
        shuffle_buffer=0,
        boxes_per_sample=k,
        min_box_size=32,
    )
    return build_train_loader(
        cfg, batch_size=BATCH, image_size=32, tokenizer=TOKENIZER, start_step=start
    )


@pytest.mark.parametrize(
    "name,k,resampled,workers,expected",
    [
        ("/nonexistent/x.tar", 0, True, 0, "unreadable_shard"),
        ("/nonexistent/x.tar", 0, True, 1, "unreadable_shard"),  # through a loader worker
        ("not_a_tar.tar", 0, False, 0, "no sample could be read"),
        ("nobox.tar", 1, False, 0, "no_usable_box"),
        ("nobox.tar", 1, True, 1, "no_usable_box"),
        ("smallbox.tar", 1, True, 0, "lower data.min_box_size"),
    ],
)
def test_case1_stream_without_usable_samples_raises_with_counts(
    shards, caplog, name, k, resampled, workers, expected
):
    loader = stream(shards / name, k=k, resampled=resampled, workers=workers)
    with caplog.at_level(logging.WARNING), pytest.raises(DataError) as info:
        next(iter(loader))
    message = str(info.value)
    assert expected in message and "\n" not in message, message
    # rate-limited: at most one log line per reason within the interval (was thousands)
    reasons = [re.search(r"\((\w+), \d+ in total\)", r.getMessage())[1] for r in caplog.records]
    assert len(reasons) == len(set(reasons)) <= 2, reasons


# ---- case 4: an all-bad batch is counted and resume stays exact ---------------------------


def test_case4_all_bad_batch_is_counted_and_the_position_kept(shards):
    loader = stream(shards / "good.tar", resampled=False)
    it = iter(loader)
    first = [next(it) for _ in range(3)]  # items 0, 2, 3 (item 1 was all corrupt)
    assert loader.skipped() == {"corrupt_image": 4} and loader.position == 4
    # a stream resumed at position 2 starts with item 2 = the second usable batch
    again = stream(shards / "good.tar", resampled=False, start=2)
    assert next(iter(again)).keys == first[1].keys and again.position == 3


def test_case4_resume_after_an_interruption_is_exact_and_counts_carry_over(reference, tmp_path):
    ref, summary = reference
    assert summary["step"] == 4 and summary["skipped"] == {"corrupt_image": 8}
    assert [r["skipped_samples"] for r in metrics(ref)] == [0, 4, 4, 8]
    run = tmp_path / "run"
    shutil.copytree(ref, run)
    shutil.rmtree(ckpt.step_dir(run, 4))  # as if killed after the checkpoint of step 2
    # `hyvl train --output-dir RUN` alone: RUN/config.yaml is the config
    assert main(["train", "--output-dir", str(run)]) == 0
    got, want = metrics(run), metrics(ref)
    for record in (*got, *want):
        record.pop("samples_per_s")  # the only field that depends on the clock
    assert got == want


def test_train_output_dir_alone_resumes_with_its_config(reference, tmp_path, capsys):
    """`hyvl train --output-dir RUN` reads RUN/config.yaml (that the resume is then exact is
    test_case4's); without one, --config is asked for."""
    ref, _ = reference
    run = tmp_path / "run"
    shutil.copytree(ref, run)
    assert main(["train", "--output-dir", str(run)]) == 0  # finished: nothing left to train
    assert f"config: {run / 'config.yaml'} (the run's own)" in capsys.readouterr().err
    assert main(["train", "--output-dir", str(tmp_path / "new")]) == 2
    assert "--config is missing and" in capsys.readouterr().err


def test_recipe_name_on_an_existing_run_names_its_config_yaml(reference, tmp_path, capsys):
    ref, _ = reference
    run = tmp_path / "run"
    shutil.copytree(ref, run)
    assert main(["train", "--config", "meru_tiny", "--output-dir", str(run)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("hyvl train: error: data.train_shards is empty"), err
    assert f"{run / 'config.yaml'} is this run's config: `hyvl train --output-dir {run}`" in err


def test_checkpoint_accepts_a_step_checkpoint_folder(reference, tmp_path, capsys):
    """`--checkpoint RUN/checkpoints/step_N` (and hyvl.load of it): the model of that step,
    built from the settings in its meta.json (here the last step: the export's weights)."""
    import hyvl

    ref, _ = reference
    step = ckpt.step_dir(ref, 4)
    model, _, tokenizer = hyvl.load(step)
    export, _, _ = hyvl.load(ref)
    tokens = tokenizer(["a red circle"])
    with __import__("torch").no_grad():
        assert (model.encode_text(tokens) == export.encode_text(tokens)).all()
    texts = tmp_path / "texts.txt"
    texts.write_text("red\nblue\n")
    args = ["index", "build", "--checkpoint", str(step), "--texts", str(texts)]
    assert main([*args, "--out", str(tmp_path / "idx")]) == 0, capsys.readouterr().err


# ---- case 8: a corrupt latest checkpoint ---------------------------------------------------


def test_case8_corrupt_latest_checkpoint_falls_back_and_says_so(reference, tmp_path, capsys):
    ref, _ = reference
    run = tmp_path / "run"
    shutil.copytree(ref, run)
    state_file = ckpt.step_dir(run, 4) / ckpt.STATE
    state_file.write_bytes(state_file.read_bytes()[: state_file.stat().st_size // 2])
    shards = load_run_config(ref / "config.yaml").data.train_shards
    assert train_cli(run, overrides(Path(shards))) == 0
    err = capsys.readouterr().err
    assert "step_0000004 is unreadable" in err and "falling back" in err
    assert "resuming from" in err and "step_0000002" in err
    assert (run / "checkpoints" / "corrupt-step_0000004").is_dir()  # kept, not deleted
    losses = [r["loss"] for r in metrics(run)]
    assert losses == [r["loss"] for r in metrics(ref)]  # replayed steps 3-4 exactly


def test_case8_every_file_is_fsynced_before_the_rename(reference, tmp_path, monkeypatch):
    ref, _ = reference
    events = []
    fsync, replace = os.fsync, os.replace

    def logged_fsync(fd):
        events.append(("fsync", Path(os.readlink(f"/proc/self/fd/{fd}")).name))
        return fsync(fd)

    def logged_replace(src, dst):
        events.append(("rename", Path(dst).name))
        return replace(src, dst)

    monkeypatch.setattr(os, "fsync", logged_fsync)
    monkeypatch.setattr(os, "replace", logged_replace)
    run = tmp_path / "run"
    shards = load_run_config(ref / "config.yaml").data.train_shards
    assert train_cli(run, overrides(Path(shards), **{"train.max_steps": 2})) == 0
    rename = events.index(("rename", "step_0000002"))
    synced = {name for kind, name in events[:rename] if kind == "fsync"}
    assert synced >= {p.name for p in ckpt.step_dir(run, 2).iterdir()}


# ---- case 5: clobbering ------------------------------------------------------------------


def test_case5_foreign_directory_refused_then_overwrite_keeps_foreign_files(
    shards, tmp_path, capsys
):
    out = tmp_path / "mine"
    (out / "export").mkdir(parents=True)
    (out / "notes.txt").write_text("my notes")
    (out / "export" / "weights.bin").write_text("my weights")
    assert train_cli(out, overrides(shards / "good.tar", **{"train.max_steps": 2})) == 2
    err = capsys.readouterr().err
    assert "is not empty" in err and "--overwrite" in err and "notes.txt" in err
    assert sorted(p.name for p in out.iterdir()) == ["export", "notes.txt"]  # untouched
    args = overrides(shards / "good.tar", **{"train.max_steps": 2})
    assert train_cli(out, args, "--overwrite") == 0
    assert (out / "notes.txt").read_text() == "my notes"
    assert (out / "export.replaced-1" / "weights.bin").read_text() == "my weights"
    assert (out / "export" / "config.json").is_file()
    # a file put into hyvl's own export later is refused at the next start, not deleted
    (out / "export" / "extra.txt").write_text("mine too")
    assert train_cli(out, args) == 2
    assert "extra.txt" in capsys.readouterr().err and (out / "export" / "extra.txt").is_file()


def test_case5_resume_with_changed_settings_is_refused_or_recorded(reference, tmp_path, capsys):
    ref, _ = reference
    run = tmp_path / "run"
    shutil.copytree(ref, run)
    shards = Path(load_run_config(ref / "config.yaml").data.train_shards)
    saved = (run / "config.yaml").read_text()
    changed = overrides(shards, **{"train.batch_size": 8, "train.lr": 0.002})
    assert train_cli(run, changed) == 2
    err = capsys.readouterr().err
    assert "train.batch_size: 4 -> 8" in err and "train.lr: 0.001 -> 0.002" in err, err
    assert (run / "config.yaml").read_text() == saved  # not overwritten
    assert train_cli(run, [*changed, "train.allow_config_change=true"]) == 0
    note = metrics(run)[-1]
    assert note["event"] == "config_change" and note["step"] == 4
    assert note["changes"]["train.batch_size"] == [4, 8]
    assert (run / "config.before-step_0000004.yaml").read_text() == saved
    # extending a run (max_steps) is not a change that needs permission
    assert train_cli(run, [*changed, "train.max_steps=5"]) == 0
    err = capsys.readouterr().err
    assert "resuming with train.max_steps: 4 -> 5" in err and "no checkpoint to resume" not in err
    assert metrics(run)[-1]["step"] == 5
    # issue 28, item 5: the accepted lr is the one trained with (the checkpoint's optimizer
    # state restored the old one: the logged lr and the losses were the unchanged run's)
    want = 0.002 * lr_factor(4, warmup_steps=1, max_steps=5)
    assert metrics(run)[-1]["lr"] == pytest.approx(want, rel=1e-12)


def test_item5_deleted_or_cut_config_yaml_is_checked_against_the_checkpoint(
    reference, tmp_path, capsys
):
    ref, _ = reference
    run = tmp_path / "run"
    shutil.copytree(ref, run)
    shards = Path(load_run_config(ref / "config.yaml").data.train_shards)
    config = run / "config.yaml"
    text = config.read_text()
    cut = text.index(": ", len(text) // 2) + 3  # in half, inside a value: still valid YAML
    config.write_text(text[:cut])  # a damaged file, not 17 changed settings
    assert train_cli(run, overrides(shards)) == 0
    err = capsys.readouterr().err
    assert "config.yaml was damaged (cut short?" in err and "changed settings" not in err, err
    assert config.read_text() == text  # written again
    config.unlink()  # deleted: a changed lr is still caught, against the checkpoint's record
    assert train_cli(run, overrides(shards, **{"train.lr": 0.005})) == 2
    err = capsys.readouterr().err
    assert "train.lr: 0.001 -> 0.005" in err and "step_0000004/meta.json" in err, err


# ---- issue 28: preemption (signals), the run lock ------------------------------------------


@pytest.fixture
def sigint_as_in_a_terminal():
    """SIGINT raising KeyboardInterrupt, as in a foreground terminal (a background job, where
    the tests may run, ignores it: hyvl then leaves it ignored)."""
    import signal

    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, before)


def signal_during_step(monkeypatch, step, signum):
    """Deliver ``signum`` to this process while step ``step`` (1-based) is being trained."""
    import hyvl.train.loop as loop

    real = loop.optimizer_step

    def signalling(state, *args, **kwargs):
        if state.step == step - 1:
            os.kill(os.getpid(), signum)
        return real(state, *args, **kwargs)

    monkeypatch.setattr(loop, "optimizer_step", signalling)


def test_preempt_sigusr1_checkpoints_the_step_exits_75_and_the_rerun_is_exact(
    reference, tmp_path, capsys, monkeypatch
):
    import signal

    ref, _ = reference
    assert not (ref / ".hyvl-lock").exists()  # released at the end of the run
    shards = Path(load_run_config(ref / "config.yaml").data.train_shards)
    run = tmp_path / "run"
    shutil.copytree(ref, run)
    shutil.rmtree(ckpt.step_dir(run, 4))  # continues from step 2: steps 3 and 4 to train
    with monkeypatch.context() as mp:
        signal_during_step(mp, 3, signal.SIGUSR1)
        summary = tmp_path / "summary.json"
        assert train_cli(run, overrides(shards), "--json", str(summary)) == 75
    err = capsys.readouterr().err
    assert "stopped by SIGUSR1 at step 3/4" in err and "step_0000003" in err, err
    assert "rerun the same command to continue" in err
    assert [s for s, _ in ckpt.list_checkpoints(run)] == [2, 3]  # step 3 between the regular 2, 4
    assert json.loads(summary.read_text())["interrupted"]["step"] == 3
    assert signal.getsignal(signal.SIGUSR1) is signal.SIG_DFL  # handlers put back
    assert not (run / ".hyvl-lock").exists()
    assert train_cli(run, overrides(shards)) == 0
    assert "step_0000003 (step 3)" in capsys.readouterr().err  # resumed from the signal's
    got, want = metrics(run), metrics(ref)
    for record in (*got, *want):
        record.pop("samples_per_s")
    assert got == want  # steps 1-3 kept, step 4 replayed from the signal's checkpoint, bitwise


def test_sigterm_to_train_called_from_python_leaves_no_loader_worker(shards, tmp_path, monkeypatch):
    """train() in a Python program, stopped by SIGTERM: the Interrupted it raises (held here,
    traceback and all) keeps no DataLoader worker alive for the caller to wait on."""
    import multiprocessing
    import signal

    from hyvl.train.loop import train
    from hyvl.train.preempt import Interrupted

    args = overrides(shards / "good.tar", **{"data.workers": 1})
    cfg = load_run_config(ROOT / "configs" / "meru_tiny.yaml", args)
    signal_during_step(monkeypatch, 2, signal.SIGTERM)
    before = set(multiprocessing.active_children())  # (other tests' processes)
    with pytest.raises(Interrupted) as stopped:
        train(cfg, tmp_path / "run")
    assert stopped.value.step == 2 and stopped.value.exit_code == 75
    assert set(multiprocessing.active_children()) - before == set()


def test_preempt_ctrl_c_before_the_first_checkpoint_saves_the_step_reached(
    shards, tmp_path, capsys, monkeypatch, sigint_as_in_a_terminal
):
    import signal

    run = tmp_path / "run"
    signal_during_step(monkeypatch, 1, signal.SIGINT)  # checkpoint_every=2: none written yet
    assert train_cli(run, overrides(shards / "good.tar", **{"train.max_steps": 2})) == 130
    err = capsys.readouterr().err
    assert "stopped by SIGINT at step 1/2" in err and "step_0000001" in err, err
    assert "nothing is lost" in err
    # the rerun continues from step 1, not from 0
    assert [s for s, _ in ckpt.list_checkpoints(run)] == [1]
    assert [r["step"] for r in metrics(run)] == [1]


def test_preempt_second_late_ctrl_c_abandons_and_a_repeated_one_does_not(
    sigint_as_in_a_terminal,
):
    import signal

    from hyvl.train import preempt

    with preempt.StopSignals() as stop:
        os.kill(os.getpid(), signal.SIGINT)
        os.kill(os.getpid(), signal.SIGINT)  # the same Ctrl-C delivered again (torchrun)
        assert stop.received == "SIGINT" and stop.repeats == 1
        stop.at -= preempt.ABANDON_AFTER_S + 1  # a deliberate second Ctrl-C, later
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_lock_second_trainer_is_refused_naming_pid_and_host(shards, tmp_path, capsys):
    import socket
    import subprocess

    from hyvl.train.lock import LOCK, RunLock

    run = tmp_path / "run"
    holder = RunLock(run)
    assert holder.acquire() == []
    args = overrides(shards / "good.tar", **{"train.max_steps": 2})
    assert train_cli(run, args) == 2
    err = capsys.readouterr().err
    assert f"pid {os.getpid()} on host {socket.gethostname()}" in err and "in use" in err, err
    assert not (run / "metrics.jsonl").exists()  # the second trainer wrote nothing
    holder.release()
    assert not (run / LOCK).exists()

    # another host's lock cannot be checked: refused, with its host and how to clear it
    (run / LOCK).write_text(json.dumps({"pid": 1, "host": "node-b17"}))
    assert train_cli(run, args) == 2
    err = capsys.readouterr().err
    assert "pid 1 on host node-b17" in err and f"delete {run / LOCK}" in err, err

    # the holder died without releasing (kill -9): stale, taken over with a note
    dead = subprocess.Popen(["true"])
    dead.wait()
    (run / LOCK).write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname()}))
    lock = RunLock(run)
    notes = lock.acquire()
    assert len(notes) == 1 and f"stale lock {run / LOCK} of pid {dead.pid}" in notes[0]
    assert json.loads((run / LOCK).read_text())["pid"] == os.getpid()
    lock.release()


def test_lock_two_trainers_started_together_one_wins(tmp_path):
    import multiprocessing

    from hyvl.train.lock import RunLock

    ctx = multiprocessing.get_context("fork")
    start, done, results = ctx.Barrier(4), ctx.Barrier(4), ctx.Queue()

    def contender():
        lock = RunLock(tmp_path / "run")
        start.wait()
        try:
            lock.acquire()
            results.put("held")
        except Exception as err:  # noqa: BLE001 - reported to the parent
            results.put(str(err))
        done.wait()  # nobody releases before everyone has tried
        lock.release()

    children = [ctx.Process(target=contender) for _ in range(4)]
    for child in children:
        child.start()
    outcomes = [results.get(timeout=30) for _ in children]
    for child in children:
        child.join(timeout=30)
    assert outcomes.count("held") == 1, outcomes
    assert all("in use by another hyvl train" in o for o in outcomes if o != "held")
    assert not (tmp_path / "run" / ".hyvl-lock").exists()


def test_item10_cut_metrics_line_and_checkpoint_without_meta_are_reported_not_lost(
    reference, tmp_path, capsys
):
    ref, _ = reference
    run = tmp_path / "run"
    shutil.copytree(ref, run)
    shards = Path(load_run_config(ref / "config.yaml").data.train_shards)
    lines = (run / "metrics.jsonl").read_text().splitlines()
    lines[1] = lines[1][:30]  # the line of step 2 cut short (a disk error, an editor)
    (run / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    # a step folder without meta.json: not a checkpoint, and not to be replaced by step 6's
    made = ckpt.checkpoint_root(run) / "step_0000006"
    made.mkdir()
    (made / "notes.txt").write_text("mine")
    assert train_cli(run, overrides(shards, **{"train.max_steps": 6})) == 0
    err = capsys.readouterr().err
    assert f"{run / 'metrics.jsonl'}:2 is cut short or not JSON (after the line of step 1)" in err
    assert f"{made} has no meta.json" in err and "moved to incomplete-step_0000006" in err, err
    assert [r["step"] for r in metrics(run)] == [1, 3, 4, 5, 6]  # the lines after it kept
    assert (ckpt.checkpoint_root(run) / "incomplete-step_0000006" / "notes.txt").is_file()
    assert (ckpt.step_dir(run, 6) / "meta.json").is_file()


def test_item10_symlinks_in_export_are_the_users_and_kept(reference, tmp_path, capsys):
    import hyvl
    from hyvl.train.periodic import export_model

    ref, _ = reference
    run = tmp_path / "run"
    shutil.copytree(ref, run)
    shards = Path(load_run_config(ref / "config.yaml").data.train_shards)
    (tmp_path / "elsewhere").mkdir()
    (run / "export" / "my_data").symlink_to(tmp_path / "elsewhere")
    (run / "export" / "gone").symlink_to(tmp_path / "no-such-file")
    assert train_cli(run, overrides(shards)) == 2  # refused at start, as any foreign file
    err = capsys.readouterr().err
    assert "holds files hyvl did not write (gone, my_data)" in err, err
    # put there while the run trains: the next checkpoint's export keeps them aside
    export_model(hyvl.load(run)[0], run)
    assert (run / "export.replaced-1" / "my_data").is_symlink()
    assert (run / "export.replaced-1" / "gone").is_symlink()
    assert (tmp_path / "elsewhere").is_dir() and (run / "export" / "config.json").is_file()
