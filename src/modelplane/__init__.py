"""Modelplane: machine-learning models as a service on Kubernetes."""

__version__ = "0.1.0"

__all__ = ["__version__"]
