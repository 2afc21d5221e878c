"""Corpus preparation: VoxCeleb and NIST SRE folders, and channel-simulated copies, as Kaldi data dirs."""
