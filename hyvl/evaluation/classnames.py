"""Class names of a folder of class folders (``DIR/CLASS/IMAGE``), for every reader of one.

The names are the prompts' words, so a folder name that is an id makes the evaluation measure
nothing while still printing an accuracy. In order: ``DIR/classnames.txt`` (one name per line,
in sorted folder order); ImageNet's WordNet ids (``n01440764``) -> the names the evaluation
suite ships (``tench``), as ``hyvl eval suite`` uses them; else the folder names with ``_`` as
spaces, with a warning when they look like ids.
"""

from __future__ import annotations

import logging
import re
from functools import cache
from pathlib import Path

from hyvl.evaluation.templates import read_lines

log = logging.getLogger(__name__)

WNID = re.compile(r"n\d{8}")
# digits with at most a short letter prefix or separators: 001, 17, c3, class_04, 2-1
ID_LIKE = re.compile(r"(?:[A-Za-z]{0,5}[_\-.]?)?\d+(?:[_\-.]\d+)*")
_warned: set[str] = set()


@cache
def wordnet_names() -> dict[str, str]:
    """ImageNet-1k WordNet id -> class name (the suite's shipped list)."""
    from hyvl.evaluation.catalog import info

    imagenet = info("imagenet")
    return dict(zip(imagenet.wnids or (), imagenet.classnames, strict=True))


def is_wordnet_folder(classes: list[str]) -> bool:
    """Every class folder is an ImageNet-1k WordNet id with a shipped name."""
    table = wordnet_names()
    return bool(classes) and all(c in table for c in classes)


def _warn_once(folder: Path, text: str) -> None:
    if str(folder) not in _warned:  # a training run evaluates the same folder many times
        _warned.add(str(folder))
        log.warning("warning: %s", text)


def folder_classnames(folder: str | Path, classes: list[str]) -> list[str]:
    """The class names of ``folder`` whose class folders are ``classes`` (sorted, as
    torchvision's ImageFolder labels them)."""
    folder = Path(folder)
    listed = folder / "classnames.txt"
    if listed.is_file():
        return read_lines(listed)
    if is_wordnet_folder(classes):
        log.info("%s: class names of the WordNet-id folders from ImageNet's shipped list", folder)
        table = wordnet_names()
        return [table[c] for c in classes]
    fix = f"add {listed} (one name per line, in sorted folder order) or pass --classnames"
    if classes and all(WNID.fullmatch(c) for c in classes):
        unknown = [c for c in classes if c not in wordnet_names()]
        _warn_once(
            folder,
            f"{folder}: {len(unknown)} of the {len(classes)} WordNet-id class folders are not "
            f"ImageNet-1k classes (e.g. {unknown[0]}) and there is no classnames.txt: the ids "
            f"themselves are the prompts, so the accuracy means little; {fix}",
        )
    elif classes and all(ID_LIKE.fullmatch(c) for c in classes):
        shown = ", ".join(classes[:3]) + (", ..." if len(classes) > 3 else "")
        _warn_once(
            folder,
            f"{folder}: the class folder names look like ids ({shown}) and there is no "
            f"classnames.txt: the prompts read 'a photo of a {classes[0]}.', so the accuracy "
            f"means little; {fix}",
        )
    return [c.replace("_", " ") for c in classes]


def folder_templates(folder: Path | None, classes: list[str]) -> list[str] | None:
    """ImageNet's prompts for a WordNet-id folder without its own ``templates.txt`` (the
    suite's, so ``eval zeroshot`` and ``eval suite`` agree); otherwise None."""
    if folder is None or (folder / "templates.txt").is_file() or not is_wordnet_folder(classes):
        return None
    from hyvl.evaluation.catalog import info

    return list(info("imagenet").templates)
