"""Scoring back-end for speaker verification (numpy / scikit-learn only, never torch)."""
