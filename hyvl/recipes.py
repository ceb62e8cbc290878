"""Packaged training recipes: the YAML files of ``hyvl/configs/``, found by name.

As open_clip ships its ``model_configs``, every recipe is package data, so
``hyvl train --config hycoclip_tiny`` works from an installed wheel as well as from the
checkout (where ``configs/`` links to the same folder). ``--config`` takes a recipe name, the
name with ``.yaml``, or a path; an existing path wins.
"""

from __future__ import annotations

import difflib
from importlib import resources
from pathlib import Path

from hyvl.errors import ConfigError

SUFFIXES = (".yaml", ".yml")


def recipes_dir() -> Path:
    """The folder holding the packaged recipes (inside the installed package)."""
    return Path(str(resources.files("hyvl") / "configs"))


def list_recipes() -> list[str]:
    """Names of the packaged recipes, sorted (``clip_tiny``, ..., ``meru_vit_s``)."""
    return sorted(p.stem for p in recipes_dir().glob("*.yaml"))


def recipe_description(name: str) -> str:
    """The recipe's one-line description: the first comment line of its YAML."""
    for line in resolve_recipe(name).read_text().splitlines():
        if line.startswith("#"):
            return line.lstrip("#").strip()
        if line.strip():
            break
    return ""


def resolve_recipe(spec: str | Path) -> Path:
    """A recipe name (``meru_tiny``), ``NAME.yaml`` or a path -> the YAML file to read.

    An existing file wins over a packaged recipe of the same name; anything else that is not a
    packaged recipe raises ConfigError listing the known names.
    """
    path = Path(spec)
    if path.is_file():
        return path
    name = path.name
    for suffix in SUFFIXES:
        name = name.removesuffix(suffix)
    known = list_recipes()
    # a bare name (or NAME.yaml) is looked up in the package; a path with folders is not
    if len(path.parts) == 1 and name in known:
        return recipes_dir() / f"{name}.yaml"
    close = difflib.get_close_matches(name, known, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    raise ConfigError(
        f"config {str(spec)!r} is neither a file nor a packaged recipe; {hint}"
        f"known recipes: {', '.join(known)}"
    )
