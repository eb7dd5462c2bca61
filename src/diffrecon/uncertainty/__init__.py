"""Uncertainty from posterior draws: streaming moments, quantiles, calibration."""

from diffrecon.uncertainty.calibration import coverage, z_scores
from diffrecon.uncertainty.ensemble import Welford, quantiles

__all__ = ["Welford", "coverage", "quantiles", "z_scores"]
