"""The plugin's Qt-free modules: readers, the request -> the CLI's job, streaming, cancel,
writers."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pydicom
import pytest
import torch

from diffrecon.io.results import read_results
from diffrecon_napari import _io, _layers, _run, _writers


def _request(path, bundle, **kw):
    base = dict(
        path=str(path),
        slice_index=1,
        prior=str(bundle),
        sampler="daps-fast",
        steps=2,
        draws=4,
        batch_size=2,
        seed=0,
    )
    return _run.Request(**{**base, **kw})


def test_reader_gives_logk_and_zero_filled_with_metadata(tiny_kspace_file):
    reader = _io.get_reader(str(tiny_kspace_file))
    assert reader is not None
    layers = reader(str(tiny_kspace_file))
    (logk, kk, tk), (mask, km, _), (zf, kz, tz) = layers
    assert tk == tz == "image"
    assert logk.shape[0] == zf.shape[0] == 2 and np.isfinite(logk).all()
    assert kk["metadata"]["diffrecon"]["kind"] == "kspace"
    assert kz["metadata"]["diffrecon"]["path"] == str(tiny_kspace_file)
    assert zf.min() >= 0 and zf.max() > 0
    assert _io.get_reader("nothing.txt") is None
    # the file is fully sampled: the zero-filled layer is that of the mask a default run
    # uses (shown as its own layer), not the fully sampled image
    from diffrecon.jobs import ReconstructionJob
    from diffrecon.mri.transforms import rss
    from diffrecon.operators.fft import ifft2c

    job = ReconstructionJob(tiny_kspace_file)
    used = job.sampling_mask.numpy()
    assert km["metadata"]["diffrecon"]["kind"] == "mask" and (mask == used).all()
    assert 0 < mask.mean() < 0.5
    k = job.read_kspace(1)
    want = rss(ifft2c(torch.from_numpy(np.where(used, k, 0))), dim=0).numpy()
    full = rss(ifft2c(torch.from_numpy(k)), dim=0).numpy()
    np.testing.assert_allclose(zf[1], want, rtol=1e-5, atol=1e-6 * want.max())
    assert np.abs(zf[1] - full).max() > 0.05 * full.max()


def test_run_is_the_cli_call(tiny_kspace_file, tiny_bundle):
    """Same file, slice, mask and sampler settings as `diffrecon reconstruct`: same mean."""
    from diffrecon.cli import main

    req = _request(tiny_kspace_file, tiny_bundle)
    res = _run.run(req)
    out = tiny_kspace_file.parent / "cli_out"
    main(
        [
            "reconstruct",
            str(tiny_kspace_file),
            "-o",
            str(out),
            "--prior",
            str(tiny_bundle),
            "--sampler",
            "daps-fast",
            "--steps",
            "2",
            "--draws",
            "4",
            "--batch-size",
            "2",
            "--slices",
            "1",
            "--quiet",
        ]
    )
    cli = read_results(next(out.glob("*.h5")))
    np.testing.assert_allclose(res.mean, cli.reconstruction[0], rtol=1e-5, atol=1e-6)
    assert "psnr" in res.metrics


def test_stream_yields_steps_batches_then_done(tiny_kspace_file, tiny_bundle):
    # ESPIRiT's maps: on them the tiny prior's posterior loses to the L1 image beyond the
    # guard (with NLINV's, which --coil-maps auto may keep, the L1 image is worse too)
    events = list(
        _run.stream(_request(tiny_kspace_file, tiny_bundle, coil_maps="espirit"), threading.Event())
    )
    kinds = [k for k, _ in events]
    assert kinds[-1] == "done" and "step" in kinds
    batches = [v for k, v in events if k == "batch"]
    assert [b.draws_done for b in batches] == [2, 4]  # streams as draws arrive
    # the tiny prior does not fit the file: the hold-out guard replaced the streamed raw
    # draws by the hybrid finish, and the panel says so; with finish raw they are the result
    final = events[-1][1]
    assert final.provenance.validation.guard and final.provenance.validation.mu is not None
    assert not np.allclose(batches[-1].mean, final.mean)
    assert "WARNING: the posterior mean predicts held-out" in _layers.summary_text(final)
    raw = list(
        _run.stream(_request(tiny_kspace_file, tiny_bundle, finish="raw"), threading.Event())
    )
    np.testing.assert_allclose([v for k, v in raw if k == "batch"][-1].mean, raw[-1][1].mean)
    layers = _run.request_layers(events[-1][1], _request(tiny_kspace_file, tiny_bundle), True)
    names = [kw["name"] for _, kw, _ in layers]
    # what first, then where from (napari shortens long names in the middle); mean on top
    src = " · tiny, slice 1"
    assert names == [f"{n}{src}" for n in ("std", "zero-filled", "mask", "|error|", "mean")]
    by = {kw["name"].removesuffix(src): (d, kw) for d, kw, _ in layers}
    # std and |error| share a colormap and limits, so they compare by eye
    assert by["std"][1]["colormap"] == by["|error|"][1]["colormap"]
    limits = by["std"][1]["contrast_limits"]
    assert limits == by["|error|"][1]["contrast_limits"] and limits[0] == 0
    assert limits[1] == pytest.approx(max(by["std"][0].max(), by["|error|"][0].max()))
    # the zero-filled image is the run's: that of the mask shown beside it
    assert by["mask"][0].shape[-1] == 32 and 0 < by["mask"][0].mean() < 0.5
    assert "PSNR" in _layers.summary_text(events[-1][1])


def test_cancel_stops_at_the_next_step(tiny_kspace_file, tiny_bundle):
    cancel = threading.Event()
    kinds = []
    for kind, _ in _run.stream(_request(tiny_kspace_file, tiny_bundle, draws=8), cancel):
        kinds.append(kind)
        if kind == "step":
            cancel.set()
    assert kinds[-1] == "cancelled" and "done" not in kinds


def test_bad_requests_fail_clearly(tiny_kspace_file, tiny_bundle, tmp_path):
    with pytest.raises(ValueError, match="no k-space file"):
        _run.run(_request(tmp_path / "missing.h5", tiny_bundle))
    with pytest.raises(ValueError, match="slice 9"):
        _run.run(_request(tiny_kspace_file, tiny_bundle, slice_index=9))
    with pytest.raises(ValueError, match="select the 'mean' and 'std'"):
        _writers.write_h5(str(tmp_path / "x.h5"), [(np.zeros((4, 4)), {"metadata": {}}, "image")])
    assert not (tmp_path / "x.h5").exists()


def test_writers_round_trip_h5_and_dicom(tiny_kspace_file, tiny_bundle, tmp_path):
    req = _request(tiny_kspace_file, tiny_bundle, keep_draws=True)
    res = _run.run(req)
    layers = _run.request_layers(res, req, True)
    [h5] = _io.write_h5(str(tmp_path / "rec.h5"), layers)
    back = read_results(h5)
    np.testing.assert_allclose(back.reconstruction[0], res.mean, rtol=1e-6)
    np.testing.assert_allclose(back.std[0], res.std, rtol=1e-6)
    assert back.draws.shape[1] == 4 and back.slice_indices.tolist() == [1]
    # the reader opens result files as mean/std layers
    names = [kw["name"] for _, kw, _ in _io.get_reader(h5)(h5)]
    assert names == ["std · rec", "mean · rec"]  # the mean on top
    # saving over the k-space file the layers came from is refused, and it survives
    before = tiny_kspace_file.read_bytes()
    with pytest.raises(ValueError, match="refusing to write over an input"):
        _io.write_h5(str(tiny_kspace_file), layers)
    assert tiny_kspace_file.read_bytes() == before
    files = _io.write_dicom(str(tmp_path / "series.dcm"), layers)
    assert files and all(p.endswith(".dcm") for p in files)
    series = {pydicom.dcmread(p).SeriesDescription for p in files}
    assert len(series) >= 2
    one = [p for p in files if "mean" in pydicom.dcmread(p).SeriesDescription.lower()][0]
    dcm_layers = _io.get_reader(one)(one)
    assert dcm_layers[0][0].shape[-2:] == res.mean.shape
    np.testing.assert_allclose(
        dcm_layers[0][0][0], res.mean, rtol=0.01, atol=0.01 * float(res.mean.max())
    )


def test_request_takes_a_checkpoint_prior_with_options_and_the_auto_mask(
    tiny_kspace_file, tmp_path
):
    from diffrecon.priors.families.adm import ADMNetwork

    torch.manual_seed(0)
    net = ADMNetwork(
        True, in_channels=2, model_channels=32, out_channels=4, num_res_blocks=1,
        attention_ds=(2,), channel_mult=(1, 2), num_head_channels=16,
    )  # fmt: skip
    ckpt = tmp_path / "dds.pt"
    torch.save(net.state_dict(), ckpt)
    req = _request(tiny_kspace_file, ckpt, prior_format="adm", prior_options="num_head_channels=16")
    assert req.mask_kind == "auto"  # as the CLI: an undersampled file keeps its sampling
    req.check()
    res = _run.run(req)
    assert np.isfinite(res.mean).all() and req.job.prior.config["format"] == "adm"
    with pytest.raises(ValueError, match="KEY=VALUE"):
        _request(tiny_kspace_file, ckpt, prior_options="num_head_channels").check()


def test_all_slices_streams_each_slice_into_volumes_that_follow_the_slider(
    tiny_kspace_file, tiny_bundle
):
    req = _request(tiny_kspace_file, tiny_bundle, all_slices=True, draws=2)
    events = list(_run.stream(req, threading.Event()))
    slices = [v for k, v in events if k == "slice"]
    assert [sorted(s) for s in slices] == [[0], [0, 1]]  # one event per finished slice
    kind, done = events[-1]
    assert kind == "done" and sorted(done) == [0, 1]
    partial = _run.volume_layers(slices[0], req, False)
    src = " · tiny, all slices"  # apart from the single-slice layers
    by = {kw["name"].removesuffix(src): d for d, kw, _ in partial}
    assert by["mean"].shape[0] == 2 and not by["mean"][1].any()
    layers = _run.volume_layers(done, req, True)
    by = {kw["name"].removesuffix(src): (d, kw) for d, kw, _ in layers}
    mean = by["mean"][0]
    # each plane is that slice's own single-slice result, the same as the CLI computes
    single = _run.run(_request(tiny_kspace_file, tiny_bundle, slice_index=0, draws=2))
    np.testing.assert_allclose(mean[0], single.mean, rtol=1e-5, atol=1e-6)
    assert by["std"][1]["contrast_limits"] == by["|error|"][1]["contrast_limits"]
    written = _layers.volume_from_layers(layers)  # the volume writes as a result file
    assert written.slice_indices == [0, 1] and written.slices[1].mean.shape == mean[1].shape


def test_a_result_shows_the_between_prior_spread_and_one_interval_width_layer(tmp_path):
    from diffrecon.io.results import write_results
    from diffrecon.results import SliceResult, VolumeResult

    rng = np.random.default_rng(0)
    mean = rng.random((8, 8)).astype(np.float32) + 1
    std = 0.1 * rng.random((8, 8)).astype(np.float32)
    res = SliceResult(
        mean,
        std,
        4,
        lower=mean - 2 * std,
        upper=mean + 2 * std,
        interval_level=0.9,
        calibrated=True,
        std_within=std,
        std_between=0.5 * std,
    )
    path = tmp_path / "rec.h5"
    write_results(path, VolumeResult([res], [0], {"interval_level": 0.9, "calibrated": True}))
    by = {kw["name"]: (data, kw) for data, kw, _ in _io.get_reader(str(path))(str(path))}
    spread, kw = by["between-prior spread · rec"]
    np.testing.assert_allclose(spread[0], 0.5 * std)
    assert kw["contrast_limits"][0] == 0 and kw["colormap"] == "magma"
    width, kw = by["90% (calibrated) interval width · rec"]
    np.testing.assert_allclose(width[0], 4 * std, rtol=1e-4, atol=1e-6)
    assert kw["contrast_limits"] == [0.0, pytest.approx(float(np.percentile(4 * std, 99.5)))]
    assert by["lower 90% (calibrated) · rec"][1]["visible"] is False  # kept, not shown
    assert list(by)[-1] == "mean · rec"  # on top


def test_the_reader_opens_nifti_exports_and_claims_only_its_own_files(tmp_path):
    """The package's own NIfTI exports open with their slices on the slider; the manifest
    no longer claims every file (``*``) (issue 28 #13)."""
    import yaml

    from diffrecon.io.nifti import export_nifti
    from diffrecon.io.results import write_results
    from diffrecon.results import SliceResult, VolumeResult

    rng = np.random.default_rng(0)
    means = [rng.random((6, 5)).astype(np.float32) for _ in range(3)]
    vol = VolumeResult([SliceResult(m, 0.1 * m, 2) for m in means], [0, 1, 2], {})
    h5 = write_results(tmp_path / "rec.h5", vol)
    paths = {p.name: p for p in export_nifti(h5, tmp_path / "nii")}
    ((data, kw, kind),) = _io.get_reader(str(paths["rec_mean.nii.gz"]))(
        str(paths["rec_mean.nii.gz"])
    )
    assert kind == "image" and data.shape == (3, 6, 5) and kw["colormap"] == "gray"
    np.testing.assert_allclose(data, np.stack(means))
    ((std, kw, _),) = _io.get_reader(str(paths["rec_std.nii.gz"]))(str(paths["rec_std.nii.gz"]))
    assert kw["colormap"] == "magma" and kw["name"] == "rec_std"
    manifest = yaml.safe_load((Path(_io.__file__).parent / "napari.yaml").read_text())
    (reader,) = manifest["contributions"]["readers"]
    assert "*" not in reader["filename_patterns"] and "*.nii.gz" in reader["filename_patterns"]
    (tmp_path / "notes.txt").write_text("not an image")
    assert _io.get_reader(str(tmp_path / "notes.txt")) is None


def test_the_widget_request_adapts_and_spreads_over_priors(tiny_kspace_file, tiny_bundle):
    """The widget's 'adapt the prior' and 'more priors' fields are the CLI's --adapt and
    --priors: the adapted prior shares the draws and the result shows the between-prior
    spread; what cannot run is refused before any work (issues 25, 26)."""
    with pytest.raises(ValueError, match="needs adaptation"):
        _request(tiny_kspace_file, tiny_bundle, spread_priors="adapted").check()
    with pytest.raises(ValueError, match="is the main prior already"):
        _request(tiny_kspace_file, tiny_bundle, spread_priors=str(tiny_bundle)).check()
    req = _request(
        tiny_kspace_file, tiny_bundle, adapt="rank=2,steps=1,levels=2", spread_priors="adapted"
    )
    req.check()
    assert req.job.spread_priors == ("adapted",) and req.job.adapt.rank == 2
    res = _run.run(req)
    assert res.std_between is not None and res.std_between.shape == res.mean.shape
    names = [kw["name"] for _, kw, _ in _run.request_layers(res, req, True)]
    assert "between-prior spread · tiny, slice 1" in names
