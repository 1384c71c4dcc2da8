"""Defence: VAE detector (paper 001), anomaly scores, residual baseline, guarded targets, guard
calibration and evaluation, the adaptive attack's objective.

Every name in ``__all__`` is imported on first use (see :mod:`onepixel._lazy`), so importing
the package does not load torch.
"""

from onepixel._lazy import attach

_LAZY = {
    "AdaptiveObjective": ".adaptive",
    "AdversarialSet": ".evaluate",
    "Campaign": ".guard_eval",
    "Guard": ".guard_file",
    "GuardFileError": ".guard_file",
    "GuardedTarget": ".guard",
    "ResidualDetector": ".residual",
    "TrainConfig": ".train",
    "TrainResult": ".train",
    "VAE": ".vae",
    "VAEConfig": ".vae",
    "VAEDetector": ".detector",
    "build_guard": ".guard_file",
    "calibrate_guard": ".calibrate",
    "create_detector": ".detectors",
    "register_detector": ".detectors",
    "default_guard": ".guard_file",
    "evaluate_detectors": ".evaluate",
    "evaluate_guard": ".guard_eval",
    "fpr_threshold": ".scores",
    "load_campaign": ".guard_eval",
    "load_guard_file": ".guard_file",
    "load_runs": ".evaluate",
    "load_vae": ".train",
    "minkowski": ".scores",
    "save_vae": ".train",
    "train_vae": ".train",
    "write_guard_file": ".guard_file",
    "youden_threshold": ".scores",
}
__getattr__, __dir__ = attach(__name__, _LAZY)

__all__ = sorted(_LAZY)
