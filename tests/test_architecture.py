"""The import drawing of ``src/diffrecon``: rooms (a top-level module or subpackage), arrows
(a room importing another, at module level or inside a function) and floors. Layering runs
one way: no arrow may close a cycle, and the listed rooms keep away from those above them.

``python tests/test_architecture.py`` prints the drawing (rooms by floor, arrow count)."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "diffrecon"

# rooms that must not import these (the targets and DESIGN.md's layering)
FORBIDDEN = {
    "io": {"mri", "api", "jobs", "batch", "cli", "samplers", "priors", "pipeline", "arrays"},
    "mri": {"api", "jobs", "batch", "cli", "calibration_run", "demo", "samplers", "priors"},
    "operators": {"priors", "samplers", "api", "jobs", "batch", "cli", "io", "mri"},
    "priors": {"samplers", "api", "jobs", "batch", "cli", "mri"},
    "samplers": {"io", "cli", "jobs", "batch", "api", "calibration_run", "demo"},
    "api": {"io", "cli", "jobs", "batch", "mri"},
    "results": {"io", "cli", "jobs", "batch", "api", "mri"},
}


def room(module: str) -> str | None:
    """``diffrecon.mri.masks`` -> ``mri``; the package itself -> ``diffrecon``."""
    parts = module.split(".")
    if parts[0] != "diffrecon":
        return None
    return parts[1] if len(parts) > 1 else "diffrecon"


def arrows() -> dict[str, set[str]]:
    """Room -> the rooms it imports (any import statement anywhere in its files)."""
    out: dict[str, set[str]] = defaultdict(set)
    for path in SRC.rglob("*.py"):
        rel = path.relative_to(SRC.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        here = ".".join(parts)
        src_room = room(here)
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                if node.level:
                    base = here.split(".")[: len(here.split(".")) - node.level + 1]
                    names = [".".join([*base, node.module])]
                else:
                    names = [node.module]
                if node.module == "diffrecon":  # from diffrecon import x: the room x
                    names = [f"diffrecon.{a.name}" for a in node.names]
            for n in names:
                dst = room(n)
                if dst is not None and dst != src_room and src_room != "diffrecon":
                    out[src_room].add(dst)
        out.setdefault(src_room, set())
    return dict(out)


def floors(graph: dict[str, set[str]]) -> dict[str, int]:
    """Floor of each room: 0 for rooms importing none, else one above its highest import
    (arrows in a cycle are ignored here; :func:`cycles` reports them)."""
    memo: dict[str, int] = {}

    def f(r: str, stack: tuple[str, ...]) -> int:
        if r in memo:
            return memo[r]
        below = [f(d, (*stack, r)) for d in graph.get(r, ()) if d not in stack and d != r]
        memo[r] = 1 + max(below) if below else 0
        return memo[r]

    for r in graph:
        f(r, ())
    return memo


def cycles(graph: dict[str, set[str]]) -> list[tuple[str, str]]:
    """Arrows ``a -> b`` where ``b`` also reaches ``a``: imports that run back up."""

    def reaches(a: str, b: str) -> bool:
        seen, todo = set(), [a]
        while todo:
            r = todo.pop()
            if r == b:
                return True
            if r not in seen:
                seen.add(r)
                todo.extend(graph.get(r, ()))
        return False

    return sorted((a, b) for a, ds in graph.items() for b in ds if reaches(b, a))


def test_no_import_runs_back_up():
    assert cycles(arrows()) == []


def test_rooms_keep_away_from_the_rooms_above():
    graph = arrows()
    bad = {r: sorted(graph.get(r, set()) & banned) for r, banned in FORBIDDEN.items()}
    assert {r: b for r, b in bad.items() if b} == {}


def test_the_core_never_imports_qt_or_napari():
    for path in SRC.rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            mods = []
            if isinstance(node, ast.Import):
                mods = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                mods = [node.module]
            for m in mods:
                assert m.split(".")[0] not in {"napari", "qtpy", "PyQt5", "PySide6"}, path


if __name__ == "__main__":
    g = arrows()
    fl = floors(g)
    for level in range(max(fl.values()) + 1):
        print(f"floor {level}: {', '.join(sorted(r for r, v in fl.items() if v == level))}")
    n_arrows = sum(len(v) for v in g.values())
    print(f"{len(g)} rooms, {n_arrows} arrows, {max(fl.values()) + 1} floors")
    print(f"upward arrows (in a cycle): {cycles(g)}")
