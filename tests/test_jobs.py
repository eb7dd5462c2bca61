"""ReconstructionJob: checks before work, one mask per file, arrays like files, provenance."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from diffrecon.adapt import AdaptSettings
from diffrecon.io.fastmri import open_fastmri
from diffrecon.io.results import read_results, write_results
from diffrecon.jobs import ArrayInput, ReconstructionJob
from diffrecon.mri.mapsets import MAP_VARIANTS
from diffrecon.mri.masks import MaskSpec, fastmri_seed
from diffrecon.mri.validation import guarded
from diffrecon.results import HOLDOUT_ATTRS

FAST = {"steps": 2}


def _job(path, bundle, **kw):
    base = dict(prior=str(bundle), sampler="daps-fast", overrides=FAST, slices=[1], draws=2, seed=0)
    return ReconstructionJob(path, **{**base, **kw})


@pytest.mark.parametrize(
    "kw, match",
    [
        ({"sampler": "nope"}, "unknown sampler 'nope'"),
        ({"draws": 0}, "draws must be >= 1"),
        ({"coil_maps": "sense"}, "--coil-maps must be one of auto, espirit, nlinv"),
        ({"draws": 2.5}, "draws must be an integer"),
        ({"overrides": {"stepz": 3}}, "stepz: not a setting of sampler 'daps'"),
        ({"overrides": {"steps": 0}}, "steps must be an integer >= 1"),
        ({"overrides": {"sigma_min": 5.0, "sigma_max": 1.0}}, "sigma_min must be below"),
        ({"sampler": "cpigdm-5"}, "needs an exact pseudo-inverse"),
        ({"slices": [7]}, "slice 7 is outside the 2 slices"),
        ({"quantile_levels": (1.5,)}, "quantiles must lie in"),
        ({"noise_std": -1.0}, "noise-std must be >= 0"),
        ({"mask": MaskSpec(kind="file")}, "no 'mask' dataset"),
        ({"precision": "float16"}, "precision must be one of float32, bfloat16"),
        ({"check_start": 0.0}, "check_start must be > 0"),
        ({"adapt": AdaptSettings(), "holdout": False}, "--adapt needs the hold-out check"),
    ],
)
def test_validate_refuses_bad_settings_before_any_work(
    tiny_kspace_file, tiny_bundle, monkeypatch, kw, match
):
    def no_work(*a, **k):
        raise AssertionError("validate() must not preprocess or sample")

    monkeypatch.setattr("diffrecon.jobs.prepare_slice", no_work)
    monkeypatch.setattr("diffrecon.jobs.reconstruct", no_work)
    with pytest.raises(ValueError, match=match):
        _job(tiny_kspace_file, tiny_bundle, **kw).validate()


def test_bfloat16_precision_is_applied_recorded_and_refused_for_exact_priors(
    tiny_kspace_file, tiny_bundle
):
    from diffrecon.priors import GaussianPrior
    from diffrecon.priors.checkpoints import shared_prior

    job = _job(tiny_kspace_file, tiny_bundle, precision="bfloat16", holdout=False).validate()
    assert job.prior.precision == "bfloat16"
    assert shared_prior(str(tiny_bundle)).precision == "float32"  # other jobs unaffected
    assert job.record.precision == "bfloat16"
    res = job.run_slice(1)
    assert res.mean.dtype == np.float32 and np.isfinite(res.mean).all()
    # a prior handed over already in bf16 stays so unless the job names a precision
    again = _job(tiny_kspace_file, tiny_bundle, prior=job.prior, precision=None)
    assert again.load_prior().precision == "bfloat16" and again.record.precision == "bfloat16"
    back = _job(tiny_kspace_file, tiny_bundle, prior=job.prior, precision="float32")
    assert back.load_prior().precision == "float32"
    exact = GaussianPrior(np.zeros((2, 4, 4)), np.eye(32))
    with pytest.raises(ValueError, match="needs a learned prior"):
        _job(tiny_kspace_file, tiny_bundle, prior=exact, precision="bfloat16").load_prior()


@pytest.mark.parametrize("native", [True, False])
def test_auto_precision_is_bfloat16_only_where_native_and_leaves_exact_priors_alone(
    tiny_kspace_file, tiny_bundle, monkeypatch, native
):
    from diffrecon.priors import GaussianPrior

    flags = {"fpu", "avx512f"} | ({"avx512_bf16"} if native else set())
    monkeypatch.setattr("diffrecon.priors.learned._cpu_flags", lambda: flags)
    want = "bfloat16" if native else "float32"
    job = _job(tiny_kspace_file, tiny_bundle, precision="auto", holdout=False).validate()
    assert job.record.precision == want  # resolved before the prior is loaded, too
    assert job.load_prior().precision == want and job.record.precision == want
    exact = GaussianPrior(np.zeros((2, 4, 4)), np.eye(32))
    kept = _job(tiny_kspace_file, tiny_bundle, prior=exact, precision="auto")
    assert kept.load_prior() is exact and kept.record.precision is None


def test_native_bfloat16_reads_cpu_flags_and_refuses_unknown_precisions(monkeypatch):
    from diffrecon.priors.learned import native_bfloat16, resolve_precision

    monkeypatch.setattr("diffrecon.priors.learned._cpu_flags", lambda: {"amx_bf16"})
    assert native_bfloat16("cpu") and resolve_precision("auto", "cpu") == "bfloat16"
    monkeypatch.setattr("diffrecon.priors.learned._cpu_flags", lambda: {"avx2", "avx512f"})
    assert not native_bfloat16("cpu") and resolve_precision("auto", "cpu") == "float32"
    assert not native_bfloat16("meta")  # neither CPU nor CUDA: emulated at best
    assert resolve_precision("bfloat16", "cpu") == "bfloat16"
    with pytest.raises(ValueError, match="precision must be one of float32, bfloat16, auto"):
        resolve_precision("float16")


def test_an_adapted_run_records_the_adaptation_and_leaves_the_shared_prior_alone(
    tiny_kspace_file, tiny_bundle, tmp_path
):
    from diffrecon.priors import GaussianPrior
    from diffrecon.priors.checkpoints import shared_prior

    settings = AdaptSettings(levels=2, steps=1)
    job = _job(tiny_kspace_file, tiny_bundle, adapt=settings).validate()
    before = [p.clone() for p in shared_prior(str(tiny_bundle)).net.parameters()]
    res = job.run_slice(1)
    check = res.provenance.validation
    assert check is not None and check.adapted is not None and check.adapt_seconds > 0
    assert check.adapt_reason
    assert job.record.adapt == dataclasses.asdict(settings)
    after = list(shared_prior(str(tiny_bundle)).net.parameters())
    assert all(torch.equal(a, b) for a, b in zip(before, after, strict=True))
    out = tmp_path / "adapted.h5"
    write_results(out, job.volume([res]))
    attrs = read_results(out).attrs
    assert json.loads(attrs["holdout_adapted"]) == [check.adapted]
    assert json.loads(attrs["holdout_adapt_reason"]) == [check.adapt_reason]
    exact = GaussianPrior(np.zeros((2, 4, 4)), np.eye(32))
    with pytest.raises(ValueError, match="--adapt needs a learned prior"):
        _job(tiny_kspace_file, tiny_bundle, prior=exact, adapt=settings).load_prior()


def test_volume_scope_adapts_once_and_every_slice_draws_with_it(
    tiny_kspace_file, tiny_bundle, adaptations
):
    """``scope="volume"``: one adaptation, on the middle slice, shared by every slice and
    recorded as such in each slice's provenance; a job handed that adaptation adapts no
    more and draws the same images."""
    calls = adaptations
    settings = AdaptSettings(levels=2, steps=1, scope="volume")
    job = _job(tiny_kspace_file, tiny_bundle, slices=None, adapt=settings).validate()
    vol = job.run()
    assert len(calls) == 1 and job.shared_adaptation.slice == 1
    checks = [r.provenance.validation for r in vol.slices]
    assert all(
        c.adapt_reason.startswith("shared by the volume: adapted once on slice 1") for c in checks
    )
    assert len({c.adapted for c in checks}) == 1
    again = _job(
        tiny_kspace_file, tiny_bundle, slices=[0], adapt=settings,
        shared_adaptation=job.shared_adaptation,
    ).validate()  # fmt: skip
    np.testing.assert_array_equal(again.run().slices[0].mean, vol.slices[0].mean)
    assert len(calls) == 1


def test_a_volume_adaptation_fits_on_the_maps_the_posterior_chose(
    tiny_kspace_file, tiny_bundle, monkeypatch
):
    """``scope="volume"`` with ``coil_maps="auto"``: the one adaptation is fitted with the
    coil maps the base prior's fit-sample draws chose, as a per-slice adaptation is; with
    ``coil_maps="espirit"`` no such draws are made."""
    import diffrecon.jobs as jobs

    events = []
    real_maps, real_adapt = jobs.ReconstructionJob.posterior_maps, jobs.adapt_prior

    def maps(self, *args, **kw):
        out = real_maps(self, *args, **kw)
        events.append(("maps", out[0].maps_source))
        return out

    def adapt(*args, **kw):
        events.append(("adapt", None))
        return real_adapt(*args, **kw)

    monkeypatch.setattr(jobs.ReconstructionJob, "posterior_maps", maps)
    monkeypatch.setattr(jobs, "adapt_prior", adapt)
    settings = AdaptSettings(levels=2, steps=1, scope="volume")
    kw = dict(slices=None, adapt=settings, holdout_fraction=0.3)
    _job(tiny_kspace_file, tiny_bundle, **kw).validate().adapt_volume()
    assert [e[0] for e in events] == ["maps", "adapt"]
    events.clear()
    _job(tiny_kspace_file, tiny_bundle, coil_maps="espirit", **kw).validate().adapt_volume()
    assert [e[0] for e in events] == ["adapt"]


def test_a_volume_adaptation_key_changes_with_whatever_the_adaptation_depends_on(
    tiny_kspace_file, tiny_bundle
):
    """A resumed batch reuses a saved adaptation only under the same key: the mask, the
    coil maps, the noise level, the seed, the prior's settings and the slice all enter it;
    the draw count's output-only settings (quantiles) do not."""
    settings = AdaptSettings(levels=2, steps=1, scope="volume")
    job = _job(tiny_kspace_file, tiny_bundle, adapt=settings)
    key = job.adaptation_key(1)
    maps = np.ones((4, *job.kspace_shape), np.complex64)  # the tiny file has 4 coils
    for change in (
        {"mask": MaskSpec(acceleration=8)},
        {"mask": MaskSpec(seed=3)},
        {"maps": maps},
        {"noise_std": 0.01},
        {"seed": 1},
        {"adapt": dataclasses.replace(settings, rank=8)},
        {"overrides": {"steps": 3}},
        {"coil_maps": "espirit"},
    ):
        other = _job(tiny_kspace_file, tiny_bundle, **{"adapt": settings, **change})
        assert other.adaptation_key(1) != key, change
    assert _job(tiny_kspace_file, tiny_bundle, adapt=settings).adaptation_key(0) != key
    same = _job(tiny_kspace_file, tiny_bundle, adapt=settings, quantile_levels=(0.1, 0.9))
    assert same.adaptation_key(1) == key


def test_validate_loads_the_prior_once_and_names_a_missing_file(tiny_kspace_file, tiny_bundle):
    job = _job(tiny_kspace_file, tiny_bundle).validate()
    prior = job.prior
    assert not isinstance(prior, str) and prior.name == "tiny"
    assert job.load_prior() is prior
    with pytest.raises(ValueError, match="no such file"):
        _job(tiny_kspace_file.parent / "missing.h5", tiny_bundle).validate()


def test_mask_is_seeded_by_the_file_name_once_per_file(tiny_kspace_file, tiny_bundle):
    job = _job(tiny_kspace_file, tiny_bundle, slices=None)
    spec = MaskSpec(4.0, 0.08, "random", seed=fastmri_seed(tiny_kspace_file.name))
    f = open_fastmri(tiny_kspace_file)
    padding = f.header.padding
    expected = spec.build(job.kspace_shape, None, padding)
    assert np.array_equal(job.sampling_mask.numpy(), expected.numpy())
    assert job.sampling_mask is job.sampling_mask  # built once, shared by every slice
    assert MaskSpec().seed_for("x.h5") == fastmri_seed("x.h5")
    assert MaskSpec(seed=3).seed_for("x.h5") == 3


def test_array_input_reconstructs_like_the_file(tiny_kspace_file, tiny_bundle):
    """An in-memory k-space array (oversampled readout and its recon size) named like the
    file gives the file's mask, preprocessing and draws."""
    f = open_fastmri(tiny_kspace_file)
    kspace = np.stack([f.kspace(i) for i in range(f.num_slices)])
    targets = np.stack([f.target(i) for i in range(f.num_slices)])
    from_file = _job(tiny_kspace_file, tiny_bundle).run()
    array = ArrayInput(
        kspace, name=tiny_kspace_file.name, target_images=targets, readout_crop=f.readout_crop
    )
    from_array = _job(array, tiny_bundle).run()
    np.testing.assert_allclose(from_array.slices[0].mean, from_file.slices[0].mean, rtol=1e-5)
    assert from_array.slices[0].metrics == pytest.approx(from_file.slices[0].metrics)
    with pytest.raises(ValueError, match="complex"):
        ArrayInput(np.zeros((1, 2, 8, 8)))


def test_result_attributes_carry_the_provenance(tiny_kspace_file, tiny_bundle, tmp_path):
    job = _job(tiny_kspace_file, tiny_bundle, command="diffrecon reconstruct tiny.h5")
    volume = job.run()
    prov = volume.slices[0].provenance
    assert prov.record.seed == 0 and prov.record.draws == 2 and prov.noise_std_used >= 0.01
    assert prov.mask.dtype == bool and prov.intensity_scale > 0
    res = read_results(write_results(tmp_path / "r.h5", volume))
    back = res.attrs
    # the complex posterior mean is kept beside fastMRI's magnitude `reconstruction`
    assert res.reconstruction_complex.dtype == np.complex64
    assert res.reconstruction_complex.shape == res.reconstruction.shape
    assert np.abs(res.reconstruction_complex).max() > 0
    assert (np.abs(res.reconstruction_complex) <= res.reconstruction * (1 + 1e-5) + 1e-6).all()
    for key, value in {
        "prior": "tiny",
        "sampler": "daps",
        "preset": "daps-fast",
        "seed": 0,
        "draws": 2,
        "mask_type": "random (auto)",
        "command": "diffrecon reconstruct tiny.h5",
    }.items():
        assert back[key] == value
    assert '"steps": 2' in back["settings"] and back["diffrecon_version"]


def test_importing_the_dicom_writer_does_not_load_the_samplers():
    code = (
        "import sys, diffrecon.io.dicom, diffrecon.mri.masks; "
        "print(any(m.startswith('diffrecon.samplers') for m in sys.modules), "
        "'diffrecon.api' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]
    from diffrecon import __version__, reconstruct
    from diffrecon.priors import load  # the README's import

    assert callable(reconstruct) and callable(load) and __version__


def test_data_residual_is_one_for_the_truth_at_the_noise_level(tiny_kspace_file, tiny_bundle):
    """||y - A x|| / (noise sqrt(2 m)) is 1 (to Monte-Carlo error) for the image that made the
    data, and far above for a wrong one."""
    import dataclasses

    import torch

    prep = _job(tiny_kspace_file, tiny_bundle).prepare(1)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, *prep.y.shape[-2:], generator=g)
    clean = prep.operator(x[None])
    sigma = 0.05
    noise = torch.complex(
        torch.randn(clean.shape, generator=g), torch.randn(clean.shape, generator=g)
    )
    y = clean + sigma * torch.where(prep.operator.mask, noise, 0)
    p = dataclasses.replace(prep, y=y.to(torch.complex64), noise_std=sigma)
    assert p.data_residual(x) == pytest.approx(1.0, abs=0.05)
    assert p.data_residual(torch.zeros_like(x)) > 5


def test_user_maps_are_used_and_saved_with_the_mask(tiny_kspace_file, tiny_bundle, tmp_path):
    """--maps: the operator uses the given maps; the result file keeps the maps and the mask
    used; misshapen maps are refused before any work."""
    from diffrecon.cli import main

    job = _job(tiny_kspace_file, tiny_bundle)
    espirit = job.prepare(1).maps.numpy()
    maps_file = tmp_path / "maps.npy"
    np.save(maps_file, espirit)
    out = tmp_path / "out"
    args = ["reconstruct", str(tiny_kspace_file), "-o", str(out), "--prior", str(tiny_bundle)]
    run = ["--slices", "1", "--steps", "2", "--draws", "2", "--sampler", "daps-fast", "--quiet"]
    # without the hold-out: with it, ESPIRiT's maps may give way to a two-set variant
    run.append("--no-holdout")
    assert main([*args, *run, "--maps", str(maps_file)]) == 0
    res = read_results(out / "tiny.h5")
    np.testing.assert_allclose(res.maps[0], espirit, rtol=1e-6)
    assert np.array_equal(res.mask, job.sampling_mask.numpy())
    assert res.attrs["input"].endswith("tiny.h5")
    # the same maps given by the user or made by ESPIRiT: the same reconstruction
    assert main([*args, *run, "-o", str(tmp_path / "esp")]) == 0
    same = read_results(tmp_path / "esp" / "tiny.h5")
    np.testing.assert_allclose(res.reconstruction, same.reconstruction, rtol=1e-5, atol=1e-6)
    np.save(maps_file, espirit[:, :-1])
    with pytest.raises(ValueError, match="coil maps must be complex"):
        _job(tiny_kspace_file, tiny_bundle, maps=maps_file).check_input()


def test_cropped_user_maps_constrain_the_background_instead_of_inventing_it(
    tiny_kspace_file, tiny_bundle
):
    """Maps that vanish outside the object (SigPy/BART crop them so) leave the background in
    the operator's null space: the reconstruction there is zero, not prior texture."""
    import dataclasses

    job = _job(tiny_kspace_file, tiny_bundle)
    maps = job.prepare(1).maps.numpy()
    h, w = maps.shape[-2:]
    support = np.zeros((h, w), bool)
    support[h // 4 : 3 * h // 4, w // 4 : 3 * w // 4] = True
    cropped = _job(tiny_kspace_file, tiny_bundle, maps=maps * support, keep_draws=True)
    prep = cropped.prepare(1)
    assert prep.support is not None and np.array_equal(prep.support.numpy(), support)
    res = cropped.run_slice(1, prepared=prep)
    assert np.all(res.mean[~support] == 0) and np.all(res.draws[:, ~support] == 0)
    assert np.all(np.isfinite(res.mean)) and res.mean[support].mean() > 0
    free = cropped.run_slice(1, prepared=dataclasses.replace(prep, support=None))
    assert np.abs(free.mean[~support]).mean() > 0.1 * free.mean[support].mean()


def test_espirit_calibrates_on_the_whole_readout_before_the_crop(tiny_kspace_file, tiny_bundle):
    """A 2x oversampled readout: ESPIRiT sees the full acquired field of view (where the coil
    sensitivities are smooth and periodic) and its maps are cropped with the image."""
    import torch

    from diffrecon.mri.coils import calibration_region, espirit_maps
    from diffrecon.mri.transforms import center_crop

    job = _job(tiny_kspace_file, tiny_bundle)
    prep = job.prepare(1)
    full = job.input.kspace(1)
    assert prep.maps_source.startswith(f"espirit(readout {full.shape[-2]} cropped to 40")
    m = np.broadcast_to(job.sampling_mask.numpy(), full.shape[-2:])
    try:
        region = calibration_region(m)
    except ValueError:  # the tiny file's ACS is narrower than a kernel
        region = None
    if region is not None:
        ref = espirit_maps(np.where(m, full, 0) / prep.scale, region=region, crop=0)
        assert torch.allclose(prep.maps, center_crop(ref, prep.maps.shape[-2:]), atol=1e-5)
    assert prep.maps.shape == (4, 40, 32)


def test_auto_mask_keeps_the_sampling_of_an_undersampled_file(tmp_path, tiny_kspace_file):
    """--mask-type auto (the default): a file whose acquired columns are partly empty is
    reconstructed with those columns, not undersampled again; a fully sampled one gets the
    retrospective mask; a file's own mask dataset wins."""
    import h5py

    f = open_fastmri(tiny_kspace_file)
    k = np.stack([f.kspace(i) for i in range(f.num_slices)])
    cols = np.zeros(k.shape[-1], bool)
    cols[::3] = True
    cols[14:19] = True
    under = tmp_path / "under.h5"
    with h5py.File(under, "w") as d:
        d.create_dataset("kspace", data=k * cols)
    job = ReconstructionJob(under, slices=[0])
    assert np.array_equal(job.sampling_mask.numpy(), cols) and job.mask_used == "measured (auto)"
    full = ReconstructionJob(tiny_kspace_file, slices=[0])
    assert full.sampling_mask.float().mean() < 0.5 and full.mask_used == "random (auto)"
    # a retrospective mask on it would take never-acquired columns for measured zeros:
    # refused before any work, naming the way out (issue 28 #2); a mask dataset alike
    again = ReconstructionJob(under, slices=[0], mask=MaskSpec(kind="random"))
    with pytest.raises(ValueError, match="already undersampled .* Use --mask-type auto"):
        _ = again.sampling_mask
    with h5py.File(under, "a") as d:
        d.create_dataset("mask", data=cols)
    again = ReconstructionJob(under, slices=[0], mask=MaskSpec(kind="equispaced"))
    with pytest.raises(ValueError, match=r"already undersampled \(\d+ of 32"):
        _ = again.sampling_mask
    assert np.array_equal(ReconstructionJob(under, slices=[0]).sampling_mask.numpy(), cols)
    # a calibration made at 4x does not fit the file's own ~2.3x sampling (issue 28 #8b)
    from diffrecon.uncertainty.conformal import Calibration

    own = ReconstructionJob(under, slices=[0], prior="tiny")
    cal = Calibration(0.9, 1.0, own.calibration_key(), slices=10, pixels=100, version="x")
    own = ReconstructionJob(under, slices=[0], prior="tiny", calibration=cal)
    with pytest.raises(ValueError, match="own sampling at 2.3x; the calibration was made at 4x"):
        own.check_calibration()


def test_the_run_record_round_trips_and_says_which_mask_was_used(
    tmp_path, tiny_kspace_file, tiny_bundle
):
    job = _job(tiny_kspace_file, tiny_bundle).validate()
    vol = job.volume([job.run_slice(1)])
    write_results(tmp_path / "r.h5", vol)
    back = read_results(tmp_path / "r.h5").record
    assert back == job.record and back.prior == "tiny"
    m = job.sampling_mask
    assert back.acceleration == pytest.approx(m.numel() / int(m.sum()))
    assert back.acceleration_requested == 4.0
    assert back.mask_type == "random (auto)" and back.mask_type_requested == "auto"
    assert back.calibration_key() == job.calibration_key()
    assert job.calibration_key()["acceleration"] == 4.0  # calibrations key the request
    # a file written before the record (no *_requested fields) still reads
    old = {k: v for k, v in vol.attrs.items() if not k.endswith("_requested")}
    write_results(tmp_path / "old.h5", type(vol)(vol.slices, vol.slice_indices, old))
    rec = read_results(tmp_path / "old.h5").record
    assert rec.seed == 0 and rec.acceleration_requested is None and rec.settings["steps"] == 2


def test_a_prior_is_loaded_once_per_process_and_again_when_its_files_change(tmp_path, tiny_bundle):
    import os
    import shutil

    from diffrecon.priors.checkpoints import shared_prior

    b = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, b)
    first = shared_prior(str(b))
    assert shared_prior(b) is first
    # every job shares it: the loaded prior, or in another precision a view of its network
    assert _job("unused.h5", b, precision=None).load_prior() is first
    assert _job("unused.h5", b, precision="bfloat16").load_prior().net is first.net
    cfg = b / "config.json"
    st = cfg.stat()
    os.utime(cfg, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert shared_prior(b) is not first


def test_the_guard_catches_a_prior_that_does_not_fit_and_the_fallback_wins(
    tmp_path, tiny_kspace_file, tiny_bundle, capsys
):
    """The tiny test prior knows nothing of the file (its posterior mean is far below
    zero-filled): the hold-out sees it, the warning names the slice and both scores, the
    hybrid finish is returned and beats the raw posterior on the truth; --finish raw keeps
    the raw draws (scored all the same), --no-holdout is the run before the check."""
    from diffrecon.cli import main

    auto = _job(tiny_kspace_file, tiny_bundle, holdout_fraction=0.3).validate().run_slice(1)
    raw = _job(tiny_kspace_file, tiny_bundle, holdout_fraction=0.3, finish="raw")
    raw = raw.validate().run_slice(1)
    off = _job(tiny_kspace_file, tiny_bundle, holdout=False).validate().run_slice(1)
    check = auto.provenance.validation
    assert check.guard and check.mu is not None and check.score_finish < check.score_posterior
    assert guarded(check.score_posterior, check.score_l1) and 0 < check.share < 0.5
    assert auto.metrics["psnr"] > off.metrics["psnr"] + 3
    assert raw.provenance.validation.guard and raw.provenance.validation.mu is None
    # the check does not touch the draws: the same as a run without it on the maps it chose
    np.save(tmp_path / "chosen.npy", raw.provenance.maps_used)
    same = _job(tiny_kspace_file, tiny_bundle, holdout=False, maps=tmp_path / "chosen.npy")
    np.testing.assert_array_equal(raw.mean, same.validate().run_slice(1).mean)
    assert off.provenance.validation is None
    # recorded per slice in the result file
    job = _job(tiny_kspace_file, tiny_bundle, holdout_fraction=0.3)
    write_results(tmp_path / "r.h5", job.volume([auto]))
    attrs = read_results(tmp_path / "r.h5").attrs
    import json

    assert json.loads(attrs["holdout_guard"]) == [True]
    assert json.loads(attrs["holdout_score_l1"]) == [check.score_l1]
    # every field of the check is recorded, under the names results.HOLDOUT_ATTRS lists
    assert set(check.as_attrs()) == set(HOLDOUT_ATTRS) and set(HOLDOUT_ATTRS) <= set(attrs)
    # ESPIRiT maps: the hold-out chose a map variant and scored plain ESPIRiT's L1
    assert check.maps in MAP_VARIANTS and json.loads(attrs["holdout_maps"]) == [check.maps]
    assert check.score_espirit is not None and check.score_l1 <= check.score_espirit
    assert read_results(tmp_path / "r.h5").record.finish == "auto"
    # the CLI warns, naming the slice and both scores
    args = ["reconstruct", str(tiny_kspace_file), "-o", str(tmp_path / "o"), "--prior"]
    run = ["--slices", "1", "--steps", "2", "--draws", "2", "--quiet", "--holdout-fraction", "0.3"]
    assert main([*args, str(tiny_bundle), "--sampler", "daps-fast", *run]) == 0
    err = capsys.readouterr().err
    assert "tiny.h5 slice 1: the posterior mean predicts held-out k-space worse" in err
    assert f"{check.score_l1:.2f}" in err or "self-tuned" in err


def test_draws_shared_among_priors_report_their_disagreement_and_round_trip(
    tiny_kspace_file, tiny_bundle, tmp_path
):
    from diffrecon.priors import load

    # the same network twice: common random numbers make the draws identical, no spread
    same = _job(tiny_kspace_file, tiny_bundle, draws=4, spread_priors=(str(tiny_bundle),))
    res = same.validate().run_slice(1)
    assert res.std_between is not None and np.array_equal(res.std_between, 0 * res.std_between)
    # 2 + 2 draws: the law of total variance with population normalisations
    assert np.allclose(res.std_within**2 / 2, res.std**2 * 3 / 4, rtol=1e-3, atol=1e-10)
    assert same.record.priors == [same.record.prior] * 2
    # another network: the priors disagree, and the parts still add up
    other = load(tiny_bundle)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():  # (the random network's last layer starts at zero: perturb all)
        for p in other.net.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    job = _job(tiny_kspace_file, tiny_bundle, draws=4, spread_priors=(other,), finish="raw")
    res = job.validate().run_slice(1)
    assert float(res.std_between.max()) > 0
    total = res.std_within.astype(float) ** 2 / 2 + res.std_between.astype(float) ** 2
    assert np.allclose(total, res.std.astype(float) ** 2 * 3 / 4, rtol=1e-3, atol=1e-10)
    out = tmp_path / "spread.h5"
    write_results(out, job.volume([res]))
    back = read_results(out)
    assert np.array_equal(back.std_between[0], res.std_between)
    assert np.array_equal(back.std_within[0], res.std_within)
    assert "priors" in job.calibration_key()
    from diffrecon.io.dicom import export_dicom, read_dicom_series
    from diffrecon.io.nifti import export_nifti

    export_dicom(out, tmp_path / "dcm")
    vol, _ = read_dicom_series(tmp_path / "dcm" / "std_between")
    top = float(res.std_between.max())
    assert np.allclose(vol[0], res.std_between, atol=top / 1000)
    assert any("std_between" in p.name for p in export_nifti(out, tmp_path / "nii"))


@pytest.mark.parametrize(
    "kw, match",
    [
        ({"spread_priors": ("adapted",)}, "'adapted' is the prior adapted"),
        ({"spread_priors": ("x",), "draws": 3}, "needs --draws 4 or more"),
    ],
)
def test_shared_draws_are_refused_before_work_when_they_cannot_run(
    tiny_kspace_file, tiny_bundle, kw, match
):
    with pytest.raises(ValueError, match=match):
        _job(tiny_kspace_file, tiny_bundle, **kw).check_settings()


def test_the_adapted_prior_can_share_the_draws_with_its_base(tiny_kspace_file, tiny_bundle):
    settings = AdaptSettings(levels=2, steps=1)
    job = _job(tiny_kspace_file, tiny_bundle, draws=4, adapt=settings, spread_priors=("adapted",))
    res = job.validate().run_slice(1)
    assert res.std_between is not None and np.isfinite(res.std_between).all()
    assert job.record.priors == [job.record.prior, "adapted"]
    if not res.provenance.validation.adapted:  # refused: base twice, so no disagreement
        assert float(res.std_between.max()) == 0.0


def test_coil_maps_auto_keeps_the_maps_whose_posterior_predicts_held_out_k_space_best(
    tiny_kspace_file, tiny_bundle
):
    """``coil_maps="auto"``: fit-sample draws with one-set ESPIRiT maps, the best two-set
    variant and NLINV's maps are scored on the held-out samples; another than the L1
    image's choice is kept only beyond the margin, its draws are the check's, and every
    score is recorded. ``"espirit"`` and ``"nlinv"`` run one estimator each, without the
    comparison."""
    from diffrecon.mri.mapsets import MAP_VARIANTS, posterior_pick

    auto = _job(tiny_kspace_file, tiny_bundle, holdout_fraction=0.3, finish="raw")
    res = auto.validate().run_slice(1)
    v = res.provenance.validation
    scores = {"espirit": v.posterior_espirit, "two_set": v.posterior_two_set}
    scores["nlinv"] = v.posterior_nlinv
    assert None not in scores.values() and v.maps_l1 in MAP_VARIANTS
    kept = posterior_pick(scores, "espirit" if v.maps_l1 == MAP_VARIANTS[0] else "two_set")
    nl = kept == "nlinv"
    assert (v.maps == "nlinv") == nl and res.provenance.maps.startswith("nlinv") == nl
    assert (v.maps == MAP_VARIANTS[0]) == (kept == "espirit")
    assert v.score_posterior == scores[kept]
    assert "NLINV's" in v.describe() and auto.record.coil_maps == "auto"
    esp = _job(
        tiny_kspace_file, tiny_bundle, holdout_fraction=0.3, finish="raw", coil_maps="espirit"
    )
    ve = esp.validate().run_slice(1).provenance.validation
    assert ve.posterior_nlinv is None and ve.maps in MAP_VARIANTS
    if v.maps == ve.maps:  # the same maps and draws as the ESPIRiT-only run
        assert ve.score_posterior == v.score_posterior
    only = _job(
        tiny_kspace_file, tiny_bundle, holdout_fraction=0.3, finish="raw", coil_maps="nlinv"
    )
    out = only.validate().run_slice(1)
    assert out.provenance.maps.startswith("nlinv") and out.provenance.validation.maps == "nlinv"
    assert out.provenance.validation.posterior_espirit is None
    given = _job(tiny_kspace_file, tiny_bundle, maps=out.provenance.maps_used[None].repeat(2, 0))
    assert given.record.coil_maps is None  # the user's maps: no estimator ran


def test_check_start_warms_the_checks_fit_draws_and_not_the_final_ones(
    tiny_kspace_file, tiny_bundle, monkeypatch
):
    """``check_start``: the fit-sample draws run the tail of the preset's schedule from the
    white-prior posterior mean (:func:`~diffrecon.samplers.registry.warm_tail`); the final
    draws keep the preset; the default starts both from pure noise."""
    import diffrecon.jobs as jobs

    seen = []
    real = jobs.reconstruct

    def spy(*args, **kw):
        seen.append(kw["sampler"])
        return real(*args, **kw)

    monkeypatch.setattr(jobs, "reconstruct", spy)
    kw = dict(holdout_fraction=0.3, finish="raw", coil_maps="espirit")
    _job(tiny_kspace_file, tiny_bundle, check_start=1.5, **kw).validate().run_slice(1)
    fit, final = seen[0], seen[-1]
    assert fit.hyper["start"] == "white" and fit.schedule.steps == 1  # 2 levels: 4 and 0.04 sd
    assert final.name == "daps-fast" and "start" not in final.hyper
    seen.clear()
    _job(tiny_kspace_file, tiny_bundle, **kw).validate().run_slice(1)
    assert all("start" not in p.hyper for p in seen) and len(seen) == 2
