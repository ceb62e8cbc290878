"""The output directory of a run: what may be written there, config.yaml, resume checks."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from hyvl.config import RunConfig, load_yaml, to_dict
from hyvl.errors import ConfigError
from hyvl.train import checkpoint as ckpt


def check_resume_config(output_dir: Path, cfg: RunConfig) -> None:
    """Resuming with a different model or objective would load mismatched weights: refuse."""
    saved_path = output_dir / "config.yaml"
    if not saved_path.is_file():
        return
    saved = load_yaml(saved_path)
    current = to_dict(cfg)
    for section in ("model", "objective"):
        if saved.get(section) != current.get(section):
            raise ConfigError(
                f"{str(saved_path)!r} was trained with a different {section!r} section "
                f"({saved.get(section)!r} vs now {current.get(section)!r}); use a new --output-dir "
                "or the original config to resume"
            )


def save_config(output_dir: Path, cfg: RunConfig) -> None:
    import yaml

    tmp = output_dir / "config.yaml.tmp"
    tmp.write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
    os.replace(tmp, output_dir / "config.yaml")


def prepare_output_dir(output_dir: Path, cfg: RunConfig) -> None:
    """Main process, before anything is built: create, clean up a killed write, check, save."""
    output_dir.mkdir(parents=True, exist_ok=True)
    for path in ckpt.remove_partial(output_dir):
        print(f"hyvl train: removed unfinished checkpoint {path}", file=sys.stderr)
    check_resume_config(output_dir, cfg)
    save_config(output_dir, cfg)
