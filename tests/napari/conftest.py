"""The viewer tests need a display (Xvfb in CI). Without one they are skipped, unless
DIFFRECON_REQUIRE_GUI is set (as .ci/run does), where a missing display is an error."""

from __future__ import annotations

import os

import pytest

pytest.importorskip("napari", reason="the napari extra is not installed")


def pytest_collection_modifyitems(config, items):
    if os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"):
        return
    if os.environ.get("DIFFRECON_REQUIRE_GUI"):
        raise pytest.UsageError("DIFFRECON_REQUIRE_GUI is set but there is no display")
    skip = pytest.mark.skip(reason="no display (run under xvfb-run)")
    for item in items:
        if "make_napari_viewer" in getattr(item, "fixturenames", ()):
            item.add_marker(skip)
