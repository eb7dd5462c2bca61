"""napari plugin for diffrecon: open fastMRI k-space or DICOM, reconstruct one slice with
posterior draws in a background thread, look at mean, std and error, save h5 or DICOM.

The contributions live in ``napari.yaml``; the logic is in the Qt-free ``_core`` module and
the widget (``_widget``) only turns its controls into a ``_core.Request``.
"""

__all__: list[str] = []
