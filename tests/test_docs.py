"""Every ``python`` and ``bash`` block in README.md and docs/*.md runs, on tiny data.

A block may be preceded by directives in HTML comments (invisible when rendered):

- ``<!-- docs-test: skip: WHY -->``: not run; the reason is required and shown;
- ``<!-- docs-test: name: NAME -->``: a visible block that later blocks of the same document
  build on (it runs as a test of its own too);
- ``<!-- docs-test: after: NAME -->``: run the block named ``NAME`` of the same document,
  which comes before it, first, in the same folder and namespace: a snippet runs as written
  after at most that visible setup, nothing is injected out of sight (issue 28 #11);
- ``<!-- docs-test: replace: OLD => NEW -->``: run with ``OLD`` replaced (large data or long
  runs swapped for small ones; every replacement must apply).

Shell blocks run with ``bash -euo pipefail`` in a fresh folder holding tiny fastMRI files
under the names the docs use (``file.h5``, ``file1000001.h5``, ``val/``, ``files.txt``...),
with this environment's ``diffrecon`` first on ``PATH`` and ``$DIFFRECON_REPO`` the
repository (for its ``datasets/`` scripts); Python blocks run in the same kind of folder.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```(\w*)\s*$")
DIRECTIVE = re.compile(r"<!--\s*docs-test:\s*(\w+):\s*(.*?)\s*-->")
RUNNABLE = ("python", "bash")
FILE_NAMES = ("file.h5", "file1000001.h5", "file1000002.h5", "test.h5", "val/a.h5", "val/b.h5")


@dataclass
class Block:
    doc: Path
    line: int
    lang: str
    code: str
    skip: str | None = None
    name: str | None = None
    after: str | None = None
    replace: list[tuple[str, str]] = field(default_factory=list)

    @property
    def id(self) -> str:
        return f"{self.doc.name}:{self.line}"


def collect_blocks() -> list[Block]:
    blocks = []
    for doc in DOCS:
        lines = doc.read_text().splitlines()
        i = 0
        while i < len(lines):
            m = FENCE.match(lines[i])
            if not m:
                i += 1
                continue
            lang, start = m.group(1), i
            j = i + 1
            while j < len(lines) and not lines[j].startswith("```"):
                j += 1
            if lang in RUNNABLE:
                block = Block(doc, start + 1, lang, "\n".join(lines[i + 1 : j]) + "\n")
                k = start - 1
                while k >= 0 and DIRECTIVE.search(lines[k]):
                    kind, arg = DIRECTIVE.search(lines[k]).groups()
                    if kind == "skip":
                        block.skip = arg
                    elif kind == "name":
                        block.name = arg
                    elif kind == "after":
                        block.after = arg
                    elif kind == "replace":
                        old, _, new = arg.partition(" => ")
                        block.replace.append((old, new))
                    else:
                        raise ValueError(f"{doc.name}:{k + 1}: unknown docs-test directive {kind}")
                    k -= 1
                blocks.append(block)
            i = j + 1
    return blocks


BLOCKS = collect_blocks()


def test_the_harness_finds_the_blocks_and_every_skip_says_why():
    assert len(BLOCKS) >= 10
    docs_with_code = {b.doc.name for b in BLOCKS}
    assert {"README.md", "cli.md", "priors.md"} <= docs_with_code
    for b in BLOCKS:
        assert b.skip is None or len(b.skip) > 10, f"{b.id}: a skip needs a reason"
    # most blocks run: a skip is the exception
    assert sum(b.skip is None for b in BLOCKS) >= 0.75 * len(BLOCKS)


@pytest.fixture(scope="module")
def tiny_files(tmp_path_factory):
    from diffrecon.data.simulate import simulate_fastmri

    src = tmp_path_factory.mktemp("docs-data")
    # five slices a file: the two files of val/ are enough for a 90% calibration (9 slices)
    slices = (96, 99, 102, 105, 108)
    return simulate_fastmri(src / "tiny.h5", slices=slices, size=(40, 32), coils=4)


def _workspace(tmp_path: Path, tiny: Path) -> Path:
    for name in FILE_NAMES:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(tiny, tmp_path / name)
    (tmp_path / "files.txt").write_text("val/a.h5\nval/b.h5\n")
    return tmp_path


def _named(block: Block) -> Block:
    """The visible setup block ``block`` names (same document, before it)."""
    found = [b for b in BLOCKS if b.doc == block.doc and b.name == block.after]
    assert len(found) == 1, f"{block.id}: no single block named {block.after!r} in {block.doc.name}"
    assert found[0].line < block.line, f"{block.id}: its setup {block.after!r} comes after it"
    assert found[0].after is None and found[0].skip is None, f"{block.id}: setups do not chain"
    return found[0]


def test_setups_are_visible_blocks_of_the_same_document():
    afters = [b for b in BLOCKS if b.after is not None]
    assert len(afters) >= 4  # the README's array examples, operators, samplers, priors
    for b in afters:
        assert _named(b).lang == "python"


def _code(block: Block) -> str:
    code = block.code
    for old, new in block.replace:
        assert old in code, f"{block.id}: replacement {old!r} does not apply"
        code = code.replace(old, new)
    return code


@pytest.mark.parametrize("block", BLOCKS, ids=[b.id for b in BLOCKS])
def test_doc_block_runs(block: Block, tmp_path, tiny_files, monkeypatch):
    if block.skip is not None:
        pytest.skip(block.skip)
    code = _code(block)
    work = _workspace(tmp_path, tiny_files)
    monkeypatch.chdir(work)
    namespace: dict = {"__name__": "__docs__"}
    if block.after is not None:
        setup = _named(block)
        exec(compile(_code(setup), setup.id, "exec"), namespace)
    if block.lang == "bash":
        env = dict(os.environ)
        env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
        env["DIFFRECON_REPO"] = str(ROOT)
        run = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", code],
            cwd=work,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert run.returncode == 0, f"{block.id} failed:\n{code}\n{run.stdout}\n{run.stderr}"
        return
    exec(compile(code, block.id, "exec"), namespace)
