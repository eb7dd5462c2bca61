"""Uncertainty from posterior draws: streaming moments, quantiles, calibration checks
against a known truth, and conformal calibration of intervals."""

from diffrecon.uncertainty.calibration import coverage, z_scores
from diffrecon.uncertainty.conformal import Calibration, calibrate, coverage_report, std_mc_error
from diffrecon.uncertainty.ensemble import Welford, prior_spread, quantiles, split_counts

__all__ = [
    "Calibration",
    "Welford",
    "calibrate",
    "coverage",
    "coverage_report",
    "prior_spread",
    "quantiles",
    "split_counts",
    "std_mc_error",
    "z_scores",
]
