"""A class hierarchy (an is-a graph over class names) and the families of its classes.

The graph is read from ``parent<TAB>child`` lines (``hierarchy.tsv``, as the demo worlds
ship it and ``hyvl eval isa2tsv`` writes it). A class's FAMILY is its ancestor directly
below a root (a node without a parent): in the real-image demo ``object > handwritten digit >
handwritten three`` the family of ``handwritten three`` is ``handwritten digit``; a class
directly below a root, or a root itself, is its own family. A family is the coarsest
grouping below the root whatever the depth of the class (in a DAG where a class has several
such ancestors, the first by name).
"""

from __future__ import annotations

from collections import defaultdict, deque
from pathlib import Path

from hyvl.errors import DataError

HIERARCHY_FILE = "hierarchy.tsv"


class Hierarchy:
    """A directed is-a graph over class names (a tree or a DAG)."""

    def __init__(self, edges: list[tuple[str, str]]):
        self.parents: dict[str, set[str]] = defaultdict(set)
        self.neighbours: dict[str, set[str]] = defaultdict(set)
        for parent, child in edges:
            self.parents[child].add(parent)
            self.neighbours[parent].add(child)
            self.neighbours[child].add(parent)
        self._anc: dict[str, frozenset[str]] = {}

    @classmethod
    def from_tsv(cls, path: str | Path) -> Hierarchy:
        path = Path(path)
        if not path.is_file():
            raise DataError(f"{path}: no such hierarchy file")
        edges = []
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if not line.strip() or line.startswith("#"):
                continue
            parts = line.split("\t")
            if len(parts) != 2 or not all(p.strip() for p in parts):
                raise DataError(f"{path}:{n}: expected 'parent<TAB>child', got {line!r}")
            edges.append((parts[0].strip(), parts[1].strip()))
        return cls(edges)

    def __contains__(self, node: str) -> bool:
        return node in self.neighbours

    def ancestors(self, node: str) -> frozenset[str]:
        """Every proper ancestor of ``node`` (all the way to the root(s))."""
        if node not in self._anc:
            seen: set[str] = set()
            todo = list(self.parents.get(node, ()))
            while todo:
                p = todo.pop()
                if p not in seen:
                    seen.add(p)
                    todo.extend(self.parents.get(p, ()))
            self._anc[node] = frozenset(seen)
        return self._anc[node]

    def path_length(self, a: str, b: str) -> int:
        """Shortest path between two nodes, edges taken in both directions (BFS)."""
        if a == b:
            return 0
        seen, queue = {a}, deque([(a, 0)])
        while queue:
            node, d = queue.popleft()
            for nxt in self.neighbours[node]:
                if nxt == b:
                    return d + 1
                if nxt not in seen:
                    seen.add(nxt)
                    queue.append((nxt, d + 1))
        raise DataError(f"hierarchy: {a!r} and {b!r} are not connected")

    def family(self, node: str) -> str:
        """The ancestor of ``node`` (or ``node``) directly below a root (module docstring)."""
        below_a_root = sorted(
            a
            for a in {node, *self.ancestors(node)}
            if any(not self.parents.get(p) for p in self.parents.get(a, ()))
        )
        return below_a_root[0] if below_a_root else node


def class_families(tree: Hierarchy, classnames: list[str], source: str | Path) -> dict[str, str]:
    """``{class: family}`` for every class; a class missing from ``tree`` is a DataError
    naming ``source`` (the hierarchy file) and the first missing classes."""
    missing = [c for c in classnames if c not in tree]
    if missing:
        raise DataError(
            f"{source}: {len(missing)} of {len(classnames)} class names are not in the "
            f"hierarchy (e.g. {missing[:3]})"
        )
    return {c: tree.family(c) for c in classnames}


def find_hierarchy(spec: str | Path | Hierarchy | None, folder: Path | None):
    """(Hierarchy, where it came from) or (None, None).

    ``spec``: a Hierarchy, a ``parent<TAB>child`` file, or None: then ``hierarchy.tsv`` in the
    image folder ``folder`` or beside it (the demo worlds' layout: ``WORLD/zeroshot/`` and
    ``WORLD/hierarchy.tsv``), when there is one.
    """
    if isinstance(spec, Hierarchy):
        return spec, "given"
    if spec:
        return Hierarchy.from_tsv(spec), str(spec)
    if folder is None:
        return None, None
    for candidate in (folder / HIERARCHY_FILE, folder.parent / HIERARCHY_FILE):
        if candidate.is_file():
            return Hierarchy.from_tsv(candidate), str(candidate)
    return None, None
