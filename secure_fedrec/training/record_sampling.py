"""Re-export of :mod:`secure_fedrec.privacy.record_sampling` for the modules that import it from here.

The planning arithmetic moved to ``privacy/`` (the accountants' calibration uses it), so
that ``privacy`` does not import ``training``; training's DP-SGD imports it from there.
"""

from ..privacy.record_sampling import client_sample_rate, planned_steps

__all__ = ["client_sample_rate", "planned_steps"]
