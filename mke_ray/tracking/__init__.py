"""MLflow records of sweeps: one parent run per sweep, one child run per trial."""

from mke_ray.tracking.recorder import Recorder, TrackingError, lasting_tracking_uri, resolve_tracking_uri

__all__ = ["Recorder", "TrackingError", "lasting_tracking_uri", "resolve_tracking_uri"]
