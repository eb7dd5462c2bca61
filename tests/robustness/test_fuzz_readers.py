"""Property-based fuzzing of the file readers: random HDF5 layouts, dtypes, shapes and
attributes give a clean ValueError (FastMRIError / ResultFileError) or a usable file: never
another exception, never a hang (an alarm bounds each example), never a write (issue 13)."""

from __future__ import annotations

import contextlib
import signal

import h5py
import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from diffrecon.io.fastmri import open_fastmri
from diffrecon.io.results import read_results
from diffrecon.mri.transforms import read_slice

NAMES = [
    "kspace",
    "mask",
    "ismrmrd_header",
    "reconstruction_rss",
    "reconstruction",
    "std",
    "slice_indices",
    "draws",
    "lower",
    "upper",
    "maps",
    "other",
]
DTYPES = [np.complex64, np.float32, np.int8, np.bool_, "S4", np.float64]

member = st.tuples(
    st.sampled_from(NAMES),
    st.sampled_from(["dataset", "group", "scalar"]),
    st.sampled_from(DTYPES),
    st.lists(st.integers(0, 5), min_size=0, max_size=4),
)
attrs = st.dictionaries(
    st.sampled_from(
        ["max", "norm", "acquisition", "settings", "draws", "interval_level", "patient_id"]
    ),
    st.one_of(
        st.integers(-5, 5),
        # h5py refuses NUL, and lone surrogates (not encodable as UTF-8)
        st.text(
            st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",)), max_size=5
        ),
        st.floats(),
    ),
    max_size=3,
)


@contextlib.contextmanager
def alarm(seconds: int):
    def boom(*_):
        raise TimeoutError("reader hung")

    old = signal.signal(signal.SIGALRM, boom)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def _write(path, members, file_attrs) -> None:
    with h5py.File(path, "w") as f:
        for name, kind, dtype, shape in members:
            if name in f:
                continue
            if kind == "group":
                f.create_group(name)
            elif kind == "scalar":
                f.create_dataset(name, data=np.zeros((), dtype=dtype))
            else:
                f.create_dataset(name, data=np.zeros(tuple(shape), dtype=dtype))
        for k, v in file_attrs.items():
            f.attrs[k] = v


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(members=st.lists(member, max_size=6), file_attrs=attrs)
def test_readers_fail_cleanly_on_random_layouts(tmp_path, members, file_attrs):
    path = tmp_path / "fuzz.h5"
    _write(path, members, file_attrs)
    before = sorted(p.name for p in tmp_path.iterdir())
    for reader in (open_fastmri, read_results):
        with alarm(10):
            try:
                obj = reader(path)
            except ValueError:
                continue
        if reader is open_fastmri:  # a file that opens must also read its first slice
            with alarm(10), contextlib.suppress(ValueError):
                read_slice(obj, 0)
                obj.target(0)
    assert sorted(p.name for p in tmp_path.iterdir()) == before
