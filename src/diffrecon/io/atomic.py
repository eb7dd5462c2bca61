"""Writing outputs without ever losing data: unique temporary names, fsync, atomic renames,
and a refusal to write onto an input.

Every writer of the package goes through here. A file is written under a unique hidden name in
its destination folder (``.NAME.<pid>.<random>.partial``), flushed to disk with its folder,
then renamed over the destination; two writers never share a temporary name, and a killed
writer's leftovers are removed by the next write to the same name. A folder (a DICOM series)
is built the same way as a whole and swapped into place.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

PARTIAL = ".partial"


class OutputExistsError(ValueError):
    """An output is already there and replacing it was not asked for."""


class OutputIsInputError(ValueError):
    """An output path names one of the command's inputs."""


def _same(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist (yet): compare resolved paths
        return a.resolve() == b.resolve()


def refuse_overwriting_inputs(outputs: Iterable[str | Path], inputs: Iterable[str | Path]) -> None:
    """Raise :class:`OutputIsInputError` if an output is an input, under any name (``..``,
    symlinks, hard links)."""
    ins = [Path(p) for p in inputs if p is not None]
    for out in outputs:
        o = Path(out)
        for i in ins:
            if _same(o, i):
                raise OutputIsInputError(
                    f"{o} is the input {i}: refusing to write over an input (choose another output)"
                )


def check_writable_folder(folder: str | Path) -> None:
    """Refuse, before any work, an output folder that cannot be created or written: a
    temporary file is created and removed in its nearest existing ancestor."""
    p = Path(folder).absolute()
    probe = p
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise ValueError(f"{folder}: {probe} is a file, not a folder")
    try:  # a real write: permission bits do not tell about read-only mounts, or for root
        with tempfile.TemporaryFile(dir=probe, prefix=".diffrecon-probe."):
            pass
    except OSError as err:
        raise ValueError(f"{folder}: {probe} is not writable ({err.strerror})") from err


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def remove_stale_partials(path: str | Path) -> list[Path]:
    """Delete the temporary files and folders that killed writers of ``path`` left behind
    (their process is gone); returns what was removed."""
    p = Path(path)
    removed = []
    if not p.parent.is_dir():
        return removed
    for q in p.parent.glob(f".{p.name}.*{PARTIAL}"):
        parts = q.name[len(p.name) + 2 :].split(".")
        if not parts or not parts[0].isdigit() or _pid_alive(int(parts[0])):
            continue
        if q.is_dir():
            shutil.rmtree(q, ignore_errors=True)
        else:
            q.unlink(missing_ok=True)
        removed.append(q)
    return removed


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):  # not every file system lets a folder be opened
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _umask() -> int:
    """The process's umask (read without changing it where ``/proc`` tells it)."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)  # elsewhere: read by setting it back at once
    os.umask(mask)
    return mask


def _as_created(path: Path, folder: bool) -> None:
    """Give a temporary (``mkstemp``/``mkdtemp`` make them owner-only) the permissions a
    plain ``open``/``mkdir`` would: 0666/0777 less the umask, so outputs on shared lab
    servers stay readable to the group as the user's umask intends."""
    os.chmod(path, (0o777 if folder else 0o666) & ~_umask())


def _check(path: Path, overwrite: bool) -> None:
    if path.exists() and not overwrite:
        raise OutputExistsError(f"{path} exists: pass --overwrite to replace it")


@contextlib.contextmanager
def atomic_file(path: str | Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a unique temporary path beside ``path``; on success it is flushed to disk and
    renamed onto ``path`` (kept unless ``overwrite``); on failure it is removed."""
    path = Path(path)
    _check(path, overwrite)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_partials(path)
    fd, name = tempfile.mkstemp(
        dir=path.parent, prefix=f".{path.name}.{os.getpid()}.", suffix=PARTIAL
    )
    os.close(fd)
    tmp = Path(name)
    _as_created(tmp, folder=False)
    try:
        yield tmp
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        _check(path, overwrite)  # another writer may have finished meanwhile
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_folder(path: str | Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a fresh temporary folder beside ``path``; on success its files are flushed and
    it replaces ``path`` whole (an existing folder only with ``overwrite``: nothing of the
    old one is left behind); on failure it is removed and ``path`` is untouched."""
    path = Path(path)
    _check(path, overwrite)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_partials(path)
    tmp = Path(
        tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.{os.getpid()}.", suffix=PARTIAL)
    )
    _as_created(tmp, folder=True)
    old = None
    try:
        yield tmp
        for f in tmp.iterdir():
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
        _fsync_dir(tmp)
        _check(path, overwrite)
        if path.exists():
            old = Path(
                tempfile.mkdtemp(
                    dir=path.parent, prefix=f".{path.name}.{os.getpid()}.", suffix=".old" + PARTIAL
                )
            )
            os.replace(path, old / path.name)
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
