"""provisioner: an IT office's hosting SOP, turned into real, verified infrastructure."""

__version__ = "0.1.0"
