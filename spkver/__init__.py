"""spkver: speaker verification with Bayesian x-vectors.

``spkver.load(path=None)`` returns a :class:`spkver.api.Verifier` for a system folder (None: the shipped
default). It is imported on first use, so ``import spkver`` stays cheap (no torch).
"""

__version__ = "0.1.0"
__all__ = ["Decision", "Verifier", "load", "__version__"]


def __getattr__(name):
    if name in ("load", "Verifier", "Decision"):
        from spkver import api

        return getattr(api, name)
    raise AttributeError(f"module 'spkver' has no attribute {name!r}")
