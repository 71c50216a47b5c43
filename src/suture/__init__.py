"""suture: patch the operating-system packages of container images without rebuilding them."""

__version__ = "0.1.0"
