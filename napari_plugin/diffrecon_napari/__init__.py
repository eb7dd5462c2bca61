"""napari plugin for diffrecon: open fastMRI k-space or DICOM, reconstruct one slice with
posterior draws in a background thread, look at mean, std and error, save h5 or DICOM.

The contributions live in ``napari.yaml`` and point at ``_io`` (reader, writers, sample data)
and ``_widget``. Everything but the widget is Qt-free: ``_readers`` (files -> layers),
``_layers`` (results <-> layer data), ``_writers`` (layers -> files) and ``_run`` (the
widget's request -> the library's ``ReconstructionJob``, streamed). The widget only turns its
controls into a ``_run.Request`` and shows the events.
"""

__all__: list[str] = []
