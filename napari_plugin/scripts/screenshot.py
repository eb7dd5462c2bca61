"""Take docs/img/napari_widget.png: the widget after a reconstruction of the demo k-space.

Run under a virtual screen: ``xvfb-run -a -s "-screen 0 1600x1000x24" .venv/bin/python
napari_plugin/scripts/screenshot.py`` (napari needs OpenGL, offscreen Qt is not enough).
"""

from __future__ import annotations

import sys
from pathlib import Path

import napari
from qtpy.QtWidgets import QApplication


def main(out: Path = Path("docs/img/napari_widget.png")) -> None:
    viewer = napari.Viewer(show=True, title="diffrecon")
    viewer.window._qt_window.resize(1500, 950)
    viewer.open_sample("diffrecon", "demo_kspace")
    _, w = viewer.window.add_plugin_dock_widget("diffrecon", "Reconstruct with uncertainty")
    w.sampler.value = "daps-mri"
    w.steps.value = 20
    w.draws.value, w.batch.value = 4, 2
    w.start()
    done = {}
    w.worker.finished.connect(lambda: done.setdefault("ok", True))
    app = QApplication.instance()
    while "ok" not in done:
        app.processEvents()
    for name in list(viewer.layers):
        viewer.layers[name.name].visible = name.name in ("mean", "std")
    viewer.grid.enabled = True
    viewer.reset_view()
    for _ in range(20):
        app.processEvents()
    out.parent.mkdir(parents=True, exist_ok=True)
    viewer.screenshot(str(out), canvas_only=False)
    print(f"wrote {out}: {w.info.value!r}")
    viewer.close()


if __name__ == "__main__":
    main(*(Path(a) for a in sys.argv[1:]))
