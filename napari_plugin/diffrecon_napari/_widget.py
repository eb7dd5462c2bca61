"""The dock widget: controls -> ``_run.Request`` -> ``_run.stream`` in a thread_worker.

Kept thin on purpose: every decision (mask seed, readout crop, prior, sampler call) is the
library's ``ReconstructionJob``'s, the CLI's own path; here values are read, events shown.
"""

from __future__ import annotations

import threading
from typing import Any

from magicgui import widgets
from napari.qt.threading import thread_worker
from qtpy.QtWidgets import QVBoxLayout, QWidget

from diffrecon.mri.mapsets import COIL_MAPS
from diffrecon.mri.masks import MASK_KINDS
from diffrecon.mri.validation import FINISHES
from diffrecon.priors.checkpoints import FORMATS as PRIOR_FORMATS
from diffrecon_napari import _run
from diffrecon_napari._layers import META, summary_text


class ReconstructWidget(QWidget):
    """Choose k-space, slice, mask, prior, sampler; run; watch mean/std fill in."""

    def __init__(self, napari_viewer: Any) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.worker = None
        self._cancel = threading.Event()
        self.source = widgets.ComboBox(label="k-space layer", choices=self._kspace_layers)
        self.file = widgets.FileEdit(label="or file", filter="*.h5", value="")
        self.slice = widgets.SpinBox(label="slice", min=0, max=10_000, value=0)
        self.mask_kind = widgets.ComboBox(label="mask", choices=list(MASK_KINDS), value="auto")
        self.accel = widgets.FloatSpinBox(label="acceleration", min=1.0, max=32.0, value=4.0)
        self.center = widgets.FloatSpinBox(
            label="center fraction", min=0.0, max=1.0, step=0.01, value=0.08
        )
        self.prior = widgets.LineEdit(
            label="prior (name, bundle or checkpoint)", value="brain-mri-default"
        )
        self.prior_format = widgets.ComboBox(
            label="prior format",
            choices=list(PRIOR_FORMATS),
            value="auto",
        )
        self.prior_options = widgets.LineEdit(label="prior options (KEY=VALUE, ...)", value="")
        self.adapt = widgets.CheckBox(label="adapt the prior to the slice", value=False)
        self.spread_priors = widgets.LineEdit(
            label="more priors for the spread (NAME, ... or adapted)", value=""
        )
        self.sampler = widgets.ComboBox(label="sampler", choices=list(_run.SAMPLERS))
        self.steps = widgets.SpinBox(label="steps (0: preset)", min=0, max=5000, value=0)
        self.draws = widgets.SpinBox(label="draws", min=1, max=1024, value=8)
        self.batch = widgets.SpinBox(label="draws per update", min=1, max=256, value=2)
        self.seed = widgets.SpinBox(label="seed", min=0, max=2**31 - 1, value=0)
        self.device = widgets.ComboBox(label="device", choices=_devices())
        self.finish = widgets.ComboBox(
            label="finish (hold-out check)", choices=list(FINISHES), value="auto"
        )
        self.coil_maps = widgets.ComboBox(
            label="coil maps (hold-out chooses)", choices=list(COIL_MAPS), value="auto"
        )
        self.keep = widgets.CheckBox(label="keep draws", value=False)
        self.all_slices = widgets.CheckBox(label="all slices (follow the slider)", value=False)
        self.intervals = widgets.CheckBox(label="90% interval layers", value=False)
        self.calibration = widgets.FileEdit(
            label="calibration (optional)", filter="*.json", value=""
        )
        self.run_button = widgets.PushButton(text="Reconstruct")
        self.cancel_button = widgets.PushButton(text="Cancel", enabled=False)
        self.progress = widgets.ProgressBar(label="progress", min=0, max=1, value=0)
        self.info = widgets.Label(value="")
        self.form = widgets.Container(
            widgets=[
                self.source,
                self.file,
                self.slice,
                self.mask_kind,
                self.accel,
                self.center,
                self.prior,
                self.prior_format,
                self.prior_options,
                self.adapt,
                self.spread_priors,
                self.sampler,
                self.steps,
                self.draws,
                self.batch,
                self.seed,
                self.device,
                self.finish,
                self.coil_maps,
                self.keep,
                self.all_slices,
                self.intervals,
                self.calibration,
                self.run_button,
                self.cancel_button,
                self.progress,
                self.info,
            ]
        )
        self.run_button.changed.connect(self.start)
        self.cancel_button.changed.connect(self.cancel)
        self.viewer.layers.events.inserted.connect(lambda _: self.source.reset_choices())
        self.viewer.layers.events.removed.connect(lambda _: self.source.reset_choices())
        layout = QVBoxLayout()
        layout.addWidget(self.form.native)
        self.setLayout(layout)

    # -- values -> request ---------------------------------------------------------------
    def _kspace_layers(self, _widget: Any = None) -> list[str]:
        return [
            layer.name
            for layer in self.viewer.layers
            if layer.metadata.get(META, {}).get("kind") in ("kspace", "zero_filled")
        ]

    def request(self) -> _run.Request:
        """The request the current values describe (a chosen file wins over a layer)."""
        path = _path_or_empty(self.file.value)
        if not path and self.source.value:
            path = self.viewer.layers[self.source.value].metadata[META]["path"]
        if not path:
            raise ValueError("open a k-space file or choose one")
        return _run.Request(
            path=path,
            slice_index=self.slice.value,
            acceleration=self.accel.value,
            center_fraction=self.center.value,
            mask_kind=self.mask_kind.value,
            prior=self.prior.value,
            prior_format=self.prior_format.value,
            prior_options=self.prior_options.value,
            sampler=self.sampler.value,
            steps=self.steps.value,
            draws=self.draws.value,
            batch_size=self.batch.value,
            seed=self.seed.value,
            device=self.device.value,
            keep_draws=self.keep.value,
            finish=self.finish.value,
            coil_maps=self.coil_maps.value,
            all_slices=self.all_slices.value,
            intervals=self.intervals.value,
            calibration=_path_or_empty(self.calibration.value),
            adapt="" if self.adapt.value else None,
            spread_priors=self.spread_priors.value,
        )

    # -- running -------------------------------------------------------------------------
    def start(self) -> None:
        try:
            req = self.request()
            req.check()
        except ValueError as exc:
            self.info.value = f"error: {exc}"
            return
        self._cancel = threading.Event()
        self._request = req
        self.progress.max, self.progress.value = 1, 0
        self.info.value = "running..."
        self.run_button.enabled, self.cancel_button.enabled = False, True
        self.worker = thread_worker(_run.stream, start_thread=False)(req, self._cancel)
        self.worker.yielded.connect(self._on_event)
        self.worker.errored.connect(self._on_error)
        self.worker.finished.connect(self._on_finished)
        self.worker.start()

    def cancel(self) -> None:
        self._cancel.set()
        self.info.value = "cancelling..."

    def _on_event(self, event: tuple[str, Any]) -> None:
        kind, value = event
        if kind == "step":
            i, n = value
            self.progress.max, self.progress.value = max(n, 1), i
        elif kind == "slice" or (kind == "done" and isinstance(value, dict)):
            self._show_volume(value, final=kind == "done")
        elif kind in ("batch", "done"):
            self._show(value, final=kind == "done")
        elif kind == "cancelled":
            self.info.value = "cancelled"

    def _show_volume(self, results: dict[int, Any], final: bool) -> None:
        """Every finished slice, stacked along the file's slices (the slider picks one)."""
        self._update(_run.volume_layers(results, self._request, final))
        n = self._request.job.input.num_slices
        last = results[max(results)]
        state = "done" if final else "running"
        self.info.value = f"{len(results)} of {n} slices ({state})\n" + summary_text(last)

    def _show(self, result: Any, final: bool) -> None:
        self._update(_run.request_layers(result, self._request, final))
        self.info.value = summary_text(result) + ("" if final else " (running)")

    def _update(self, layers: list[Any]) -> None:
        """Replace the data of layers already shown (same name: a re-run of the same slice
        reuses its layers), add the others; the mean ends on top."""
        for data, kwargs, _ in layers:
            name = kwargs["name"]
            if name in self.viewer.layers:
                layer = self.viewer.layers[name]
                layer.data = data
                layer.metadata = kwargs["metadata"]
                layer.contrast_limits = kwargs.get(
                    "contrast_limits", (float(data.min()), float(data.max()) or 1.0)
                )
            else:
                self.viewer.add_image(data, **kwargs)
        means = [kw["name"] for _, kw, _ in layers if kw["metadata"][META].get("role") == "mean"]
        for name in means:
            self.viewer.layers.move(self.viewer.layers.index(name), len(self.viewer.layers))

    def _on_error(self, exc: Exception) -> None:
        self.info.value = f"error: {exc}"

    def _on_finished(self) -> None:
        self.run_button.enabled, self.cancel_button.enabled = True, False


def _path_or_empty(value: Any) -> str:
    """A FileEdit's value as a path, or "" when nothing was chosen."""
    return str(value) if str(value) not in ("", ".") else ""


def _devices() -> list[str]:
    import torch

    return ["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"]
