"""mke_ray: hyperparameter sweeps for Multimodal Knowledge Expansion."""

__version__ = "0.1.0"
