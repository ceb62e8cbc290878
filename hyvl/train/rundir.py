"""The output directory of a run: whose it is, what may be replaced, resuming with changes.

- A directory hyvl did not make (no ``.hyvl-run`` marker, no config.yaml) that holds files is
  refused unless ``--overwrite``; hyvl then adds its files and deletes none of the others.
- ``export/`` is replaced at every checkpoint; files in it that hyvl did not write are
  refused at start (without ``--overwrite``) and set aside, never deleted.
- Resuming with settings that change the run (data, batch, lr, model, objective, ...) is
  refused with the differences listed, unless ``train.allow_config_change=true``: then the
  differences go to metrics.jsonl and the previous config.yaml is kept beside the new one.
  A config.yaml that is missing or cut short is reported; the settings are then compared
  against those the newest checkpoint records in its meta.json.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

from hyvl.config import RunConfig, load_yaml, to_dict
from hyvl.errors import ConfigError
from hyvl.train import checkpoint as ckpt
from hyvl.train.lock import LOCK

MARKER = ".hyvl-run"
# Keys that do not change what the model learns from which data: changing them on resume
# is fine (max_steps reshapes the cosine tail; extending a run is what resume is for).
HARMLESS = (
    "train.max_steps",
    "train.checkpoint_every",
    "train.keep_last",
    "train.log_every",
    "train.eval_every",
    "train.trackers",
    "train.max_nonfinite",
    "train.allow_config_change",
    "data.skip_log_every",
    "eval.",
)


def read_marker(output_dir: Path) -> dict[str, Any] | None:
    try:
        return json.loads((output_dir / MARKER).read_text())
    except (OSError, json.JSONDecodeError):
        return None


def write_marker(output_dir: Path, marker: dict[str, Any]) -> None:
    tmp = output_dir / f"{MARKER}.tmp"
    tmp.write_text(json.dumps(marker) + "\n")
    os.replace(tmp, output_dir / MARKER)


def is_hyvl_run(output_dir: Path) -> bool:
    """Made by hyvl train (the marker, or config.yaml of a run made before the marker)."""
    return (output_dir / MARKER).is_file() or (output_dir / "config.yaml").is_file()


def foreign_export_files(output_dir: Path) -> list[str]:
    """Files under export/ that hyvl's last export did not write."""
    export = output_dir / "export"
    if not export.is_dir():
        return []
    written = set((read_marker(output_dir) or {}).get("export_files", []))
    return [f for f in entries(export) if f not in written]


def entries(root: Path) -> list[str]:
    """Every file under ``root`` and every symlink (to a file, a folder, or broken), as
    relative paths; symlinked folders are not entered. A symlink is something the user put
    there: it must count as theirs, not vanish with the folder."""
    found = []
    for folder, dirs, files in os.walk(root):
        base = Path(folder)
        links = [d for d in dirs if (base / d).is_symlink()]
        dirs[:] = [d for d in dirs if d not in links]
        found += [str((base / name).relative_to(root)) for name in (*files, *links)]
    return sorted(found)


def flat(node: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(node, dict):
        out: dict[str, Any] = {}
        for key, value in node.items():
            out.update(flat(value, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix: node}


def config_changes(saved: dict, current: dict) -> dict[str, list]:
    """``{key: [saved, now]}`` for every run-altering key that differs."""
    old, new = flat(saved), flat(current)
    keys = sorted(set(old) | set(new))
    return {
        k: [old.get(k), new.get(k)]
        for k in keys
        if old.get(k) != new.get(k)
        and not k.startswith(HARMLESS)
        # auto resumes with the arrangement the checkpoint recorded: nothing changes
        and not (k == "train.box_towers" and new.get(k) == "auto")
    }


def check_output_dir(output_dir: Path, cfg: RunConfig, *, overwrite: bool) -> dict[str, list]:
    """Read-only checks (every process); returns the accepted config changes of a resume."""
    if output_dir.exists() and not output_dir.is_dir():
        raise ConfigError(f"--output-dir {str(output_dir)!r} is a file, not a directory")
    if output_dir.is_dir() and not is_hyvl_run(output_dir) and not overwrite:
        found = sorted(p.name for p in output_dir.iterdir() if p.name != LOCK)
        if found:
            shown = ", ".join(found[:5]) + (", ..." if len(found) > 5 else "")
            raise ConfigError(
                f"--output-dir {str(output_dir)!r} is not empty ({shown}) and was not made by "
                "hyvl train: choose a new directory, or pass --overwrite to add the run's files "
                "there (no other file is deleted)"
            )
    # with the marker hyvl knows what its export holds (a run made before it: see export time)
    foreign = foreign_export_files(output_dir) if read_marker(output_dir) else []
    if foreign and not overwrite:
        raise ConfigError(
            f"{str(output_dir / 'export')!r} holds files hyvl did not write "
            f"({', '.join(foreign[:5])}); export/ is replaced at every checkpoint: move them "
            "away, or pass --overwrite (the old export/ is then kept as export.replaced-*)"
        )
    if not ckpt.list_checkpoints(output_dir):
        return {}  # nothing to resume: a fresh run
    saved_path = output_dir / "config.yaml"
    current = to_dict(cfg)
    damage = yaml_damage(saved_path, current)
    if damage is None:
        trained, source = load_yaml(saved_path), str(saved_path)
    else:  # deleted or cut short: the checkpoint's own record of its settings
        trained, source = trained_config(output_dir)
        if trained is None:  # checkpoints of a hyvl that did not record their settings yet
            raise ConfigError(
                f"{saved_path} is {damage} and the checkpoints in {output_dir} do not record "
                "the settings they were trained with: cannot check that this resume keeps "
                "them; restore it (a config.before-step_*.yaml beside it is an earlier copy) "
                "or use a new --output-dir"
            )
    changes = config_changes(trained, current)
    if changes and not cfg.train.allow_config_change:
        listed = "; ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in changes.items())
        raise ConfigError(
            f"resuming {str(output_dir)!r} with changed settings ({listed}; the run's are in "
            f"{source}): resume with the saved {saved_path.name}, use a new --output-dir, or "
            "pass train.allow_config_change=true to accept and record the changes"
        )
    return changes


def trained_config(output_dir: Path) -> tuple[dict | None, str]:
    """The settings the newest checkpoint was trained with (its meta.json), and that file.

    A resume compares against these when config.yaml is missing or damaged: deleting it must
    not let a change through unchecked.
    """
    for _, path in reversed(ckpt.list_checkpoints(output_dir)):
        try:
            meta = json.loads((path / ckpt.META).read_text())
        except (OSError, ValueError):
            continue  # resume reports an unreadable checkpoint and falls back
        if isinstance(meta, dict) and isinstance(meta.get("config"), dict):
            return meta["config"], str(path / ckpt.META)
    return None, ""


def yaml_damage(path: Path, expected: dict) -> str | None:
    """What is wrong with a run's config.yaml (missing, not YAML, cut short), or None.

    hyvl writes every setting, sections in a fixed order, with a final newline: a file cut
    short lacks the last sections, or ends mid-line with settings missing.
    """
    import yaml

    try:
        text = path.read_text()
    except FileNotFoundError:
        return "missing"
    except (OSError, UnicodeDecodeError) as err:
        return f"unreadable ({err})"
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        return f"damaged (not valid YAML: {str(err).splitlines()[0]})"
    if not isinstance(data, dict):
        return "damaged (not a mapping of settings)"
    sections = [k for k in expected if k not in data]
    missing = set(flat(expected)) - set(flat(data))
    if sections or (missing and not text.endswith("\n")):
        return f"damaged (cut short? {len(missing)} of {len(flat(expected))} settings missing)"
    return None


def prepare_output_dir(output_dir: Path, cfg: RunConfig, changes: dict[str, list]) -> None:
    """Main process, after :func:`check_output_dir`: create, clean up a killed write, save."""
    import yaml

    output_dir.mkdir(parents=True, exist_ok=True)
    if read_marker(output_dir) is None:
        write_marker(output_dir, {"created_by": "hyvl train", "export_files": []})
    for path in ckpt.remove_partial(output_dir):
        print(f"hyvl train: removed unfinished checkpoint {path}", file=sys.stderr)
    for path, aside in ckpt.set_aside_incomplete(output_dir):
        print(
            f"hyvl train: {path} has no {ckpt.META}, so it is not a complete checkpoint (damaged, "
            f"or not written by hyvl): not used, moved to {aside.name}",
            file=sys.stderr,
        )
    config = output_dir / "config.yaml"
    current = to_dict(cfg)
    text = yaml.safe_dump(current, sort_keys=False)
    latest = ckpt.latest_checkpoint(output_dir)
    damage = yaml_damage(config, current)
    if changes:
        kept = output_dir / f"config.before-step_{latest[0]:07d}.yaml"
        trained, _ = trained_config(output_dir)
        if damage is None:
            os.replace(config, kept)
        elif trained is not None:
            kept.write_text(yaml.safe_dump(trained, sort_keys=False))
        listed = ", ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in changes.items())
        print(
            f"hyvl train: resuming with changed settings ({listed}); recorded in metrics.jsonl, "
            f"previous config kept as {kept.name}",
            file=sys.stderr,
        )
    elif damage and (latest or damage != "missing"):
        checked = " (the settings were checked against the checkpoint's)" if latest else ""
        print(f"hyvl train: {config} was {damage}{checked}; written again", file=sys.stderr)
    elif damage is None and config.read_text() != text:
        if latest:  # only settings that do not change what is learned (max_steps, ...)
            old = flat(load_yaml(config))
            listed = ", ".join(
                f"{k}: {old.get(k)!r} -> {v!r}" for k, v in flat(current).items() if old.get(k) != v
            )
            print(f"hyvl train: resuming with {listed}", file=sys.stderr)
        else:
            print(f"hyvl train: {config} replaced (no checkpoint to resume)", file=sys.stderr)
    tmp = output_dir / "config.yaml.tmp"
    tmp.write_text(text)
    os.replace(tmp, config)


def record_runtime(output_dir: Path, info: dict[str, Any]) -> None:
    """Keep where the run runs (device, precision, processes) in the marker, and where each
    start of it ran (``runtime_history``, one entry per start with the step it started at)."""
    marker = read_marker(output_dir) or {"created_by": "hyvl train"}
    marker["runtime"] = info
    marker["runtime_history"] = [*marker.get("runtime_history", []), info][-20:]
    write_marker(output_dir, marker)


def record_box_towers(output_dir: Path, info: dict[str, Any]) -> None:
    """Keep how ``train.box_towers`` was resolved (:mod:`hyvl.train.box_towers`) in the marker."""
    marker = read_marker(output_dir) or {"created_by": "hyvl train"}
    marker["box_towers"] = info
    write_marker(output_dir, marker)


def record_export(output_dir: Path, files: list[str]) -> None:
    """Remember which files hyvl's export holds (so later ones can tell foreign files)."""
    marker = read_marker(output_dir) or {"created_by": "hyvl train"}
    marker["export_files"] = sorted(files)
    write_marker(output_dir, marker)
