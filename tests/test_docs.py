"""Every ``python`` and ``bash`` block in README.md and docs/*.md runs, on tiny data.

A block may be preceded by directives in HTML comments (invisible when rendered):

- ``<!-- docs-test: skip: WHY -->``: not run; the reason is required and shown;
- ``<!-- docs-test: setup: NAME -->``: the block needs the variables of a setup (``mri``:
  ``y``, ``operator``, ``maps``, ``x``, ``mask``, ``kspace`` of a tiny multicoil problem and
  the shipped ``prior``; ``checkpoints``: tiny checkpoint files in the published layouts);
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

import h5py
import numpy as np
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
    setups: list[str] = field(default_factory=list)
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
                    elif kind == "setup":
                        block.setups.append(arg)
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


def _mri_setup() -> dict:
    """``y``, ``operator``, ``maps``, ``x``, ``mask`` and the fully sampled ``kspace``
    ``(coils, H, W)`` of a tiny multicoil problem, and the shipped ``prior``."""
    import torch

    from diffrecon.mri import cartesian_mask, prepare_slice, remove_readout_oversampling

    with h5py.File("file.h5") as f:
        k = remove_readout_oversampling(f["kspace"][0], 40)
    mask = cartesian_mask(k.shape[-1], 4.0, 0.08, seed=0).mask
    prep = prepare_slice(np.asarray(k), mask)
    x = torch.randn(1, 2, *k.shape[-2:])
    from diffrecon.priors import load

    return {
        "prior": load("brain-mri-default"),
        "y": prep.y,
        "operator": prep.operator,
        "maps": prep.maps,
        "x": x,
        "mask": mask.numpy(),
        "kspace": np.asarray(k),
    }


def _checkpoints_setup() -> dict:
    """Tiny random checkpoints in the published layouts, under the names the docs use:
    ``inversebench-brain.pt`` (``{"net": EDMPrecond state dict}``, DhariwalUNet) and
    ``dds-brain.pt`` (a bare guided-diffusion state dict with learned variance); and
    ``my_eps_net``, a module with ``2C`` output channels."""
    import torch

    from diffrecon.priors.families.adm import ADMNetwork
    from diffrecon.priors.families.edm import EDMNetwork

    torch.manual_seed(0)
    edm = EDMNetwork(
        "DhariwalUNet", img_resolution=32, in_channels=2, out_channels=2, model_channels=16,
        channel_mult=[1, 2], num_blocks=1, attn_resolutions=[16],
    )  # fmt: skip
    torch.save({"net": edm.state_dict(), "step": 0}, "inversebench-brain.pt")
    adm = ADMNetwork(
        True, in_channels=2, model_channels=32, out_channels=4, num_res_blocks=1,
        attention_ds=(2,), channel_mult=(1, 2), num_head_channels=16,
        use_scale_shift_norm=True, resblock_updown=True,
    )  # fmt: skip
    torch.save(adm.state_dict(), "dds-brain.pt")

    class EpsNet(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Conv2d(2, 4, 3, padding=1)

        def forward(self, z, t):
            return self.conv(z)

    return {"my_eps_net": EpsNet()}


SETUPS = {"mri": _mri_setup, "checkpoints": _checkpoints_setup}


@pytest.mark.parametrize("block", BLOCKS, ids=[b.id for b in BLOCKS])
def test_doc_block_runs(block: Block, tmp_path, tiny_files, monkeypatch):
    if block.skip is not None:
        pytest.skip(block.skip)
    code = block.code
    for old, new in block.replace:
        assert old in code, f"{block.id}: replacement {old!r} does not apply"
        code = code.replace(old, new)
    work = _workspace(tmp_path, tiny_files)
    monkeypatch.chdir(work)
    namespace: dict = {"__name__": "__docs__"}
    for name in block.setups:
        namespace.update(SETUPS[name]())
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
