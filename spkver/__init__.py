"""spkver: speaker verification with Bayesian x-vectors."""

__version__ = "0.1.0"
