"""The lesion generator: reproducible, inside tissue, nothing touched outside its lesions."""

from __future__ import annotations

import numpy as np
import pytest

from diffrecon.data.lesions import KINDS, insert_lesions


def _phantom(n: int = 96) -> np.ndarray:
    yy, xx = np.mgrid[:n, :n] / (n - 1) * 2 - 1
    mag = np.where(yy**2 / 0.8 + xx**2 / 0.6 < 1, 1.0, 0.0)
    return (mag * np.exp(1j * 0.5 * xx)).astype(np.complex64)


def test_lesions_are_reproducible_inside_tissue_and_leave_everything_else_alone():
    img = _phantom()
    before = img.copy()
    a = insert_lesions(img, 6, seed=3)
    b = insert_lesions(img, 6, seed=3)
    assert np.array_equal(img, before)  # the input is not modified
    assert np.array_equal(a.image, b.image) and a.lesions == b.lesions
    assert not np.array_equal(a.image, insert_lesions(img, 6, seed=4).image)
    assert a.image.dtype == img.dtype and len(a.lesions) == 6
    outside = a.labels == 0
    assert np.array_equal(a.image[outside], img[outside])
    assert (np.abs(img)[~outside] > 0).all()  # only tissue
    assert np.allclose(np.angle(a.image[~outside]), np.angle(img[~outside]), atol=1e-5)
    for k, les in enumerate(a.lesions, start=1):
        assert les.kind in KINDS and 3 <= les.diameter <= 20
        assert 0.05 <= abs(les.contrast) <= 0.6
        ratio = np.abs(a.image[a.labels == k]) / np.abs(img[a.labels == k])
        extreme = ratio.max() if les.contrast > 0 else ratio.min()
        assert extreme == pytest.approx(1 + les.contrast, rel=1e-5)  # full contrast inside


def test_a_kept_out_region_is_never_touched_and_a_full_image_is_refused():
    img = _phantom()
    keep = np.zeros(img.shape, bool)
    keep[:, :48] = True
    out = insert_lesions(img, 4, seed=0, keep_out=keep)
    assert not out.labels[keep].any() and np.array_equal(out.image[keep], img[keep])
    with pytest.raises(ValueError, match="no room for 50 lesions"):
        insert_lesions(img, 50, seed=0, diameters=(18, 20))
    with pytest.raises(ValueError, match="kinds must be among"):
        insert_lesions(img, 1, seed=0, kinds=("cyst",))


def test_the_held_out_mni_slices_are_not_modified():
    from diffrecon.data.mni import HELDOUT_Z, get_slice

    z = HELDOUT_Z[0]
    mag = get_slice("t1", "axial", z)  # cached and shared: lesions must work on a copy
    snapshot = mag.copy()
    out = insert_lesions(mag, 5, seed=1)
    assert np.array_equal(get_slice("t1", "axial", z), snapshot)
    assert (out.labels > 0).any()
