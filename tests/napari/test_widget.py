"""The dock widget in a real viewer (under Xvfb in CI): open, reconstruct, stream, cancel."""

from __future__ import annotations

import pytest


@pytest.fixture
def widget(make_napari_viewer, tiny_kspace_file, tiny_bundle):
    viewer = make_napari_viewer()
    layers = viewer.open(str(tiny_kspace_file), plugin="diffrecon")
    names = [layer.name for layer in layers]
    assert names[0] == "k-space (log|k|) · tiny"
    assert names[1].startswith("mask (random (auto), ")  # the mask a run will use
    assert names[2].startswith("zero-filled (random (auto), ") and names[2].endswith(" · tiny")
    _, w = viewer.window.add_plugin_dock_widget("diffrecon", "Reconstruct with uncertainty")
    w.prior.value = str(tiny_bundle)
    w.sampler.value = "daps-mri"
    w.steps.value = 2
    w.slice.value = 1
    return viewer, w


def test_widget_reconstructs_and_streams_into_layers(widget, qtbot):
    viewer, w = widget
    assert w.source.value == "k-space (log|k|) · tiny"  # the opened k-space is offered
    w.draws.value, w.batch.value = 4, 2
    seen = []
    w.start()
    w.worker.yielded.connect(lambda e: seen.append(e[0]))
    with qtbot.waitSignal(w.worker.finished, timeout=120_000):
        pass
    assert "batch" in seen and seen[-1] == "done"
    src = " · tiny, slice 1"
    names = {layer.name for layer in viewer.layers}
    assert {f"mean{src}", f"std{src}", f"|error|{src}"} <= names
    assert viewer.layers[f"std{src}"].colormap.name == "magma"
    assert viewer.layers[f"mean{src}"].metadata["diffrecon"]["final"] is True
    assert viewer.layers[-1].name == f"mean{src}"  # on top, not under |error|
    assert "PSNR" in w.info.value and w.run_button.enabled
    # a re-run of the same slice reuses its layers: no duplicates, the mean still on top
    before = len(viewer.layers)
    w.start()
    with qtbot.waitSignal(w.worker.finished, timeout=120_000):
        pass
    assert len(viewer.layers) == before and viewer.layers[-1].name == f"mean{src}"


def test_widget_all_slices_follow_the_slider(widget, qtbot):
    viewer, w = widget
    w.draws.value, w.batch.value, w.all_slices.value = 2, 2, True
    seen = []
    w.start()
    w.worker.yielded.connect(lambda e: seen.append(e[0]))
    with qtbot.waitSignal(w.worker.finished, timeout=120_000):
        pass
    assert seen.count("slice") == 2 and seen[-1] == "done"
    mean = viewer.layers["mean · tiny, all slices"]
    kspace = viewer.layers["k-space (log|k|) · tiny"]
    assert mean.data.shape[0] == kspace.data.shape[0] == 2  # one plane per slice of the file
    assert all(mean.data[i].any() for i in range(2))
    assert "2 of 2 slices (done)" in w.info.value


def test_widget_cancel(widget, qtbot):
    viewer, w = widget
    w.draws.value, w.batch.value, w.steps.value = 64, 1, 50
    w.start()
    w.worker.yielded.connect(lambda e: w.cancel() if e[0] == "step" else None)
    with qtbot.waitSignal(w.worker.finished, timeout=120_000):
        pass
    assert w.info.value == "cancelled" and "mean · tiny, slice 1" not in viewer.layers


def test_widget_reports_bad_input(widget):
    _, w = widget
    w.file.value = "/nonexistent/k.h5"
    w.start()
    assert w.info.value.startswith("error: no k-space file") and w.worker is None
