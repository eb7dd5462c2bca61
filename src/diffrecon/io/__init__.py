"""File I/O: fastMRI HDF5 in and out, DICOM export."""
