"""Data of spkver, by concept.

- `spkver.data.kaldi`: Kaldi data dirs (`DataDir`), the one on-disk form every other part reads and writes;
- `spkver.data.corpora`: corpus preparation into data dirs (VoxCeleb, NIST SRE, channel-simulated copies);
- `spkver.data.synthetic`: the built-in synthetic corpus (`corpus`) and its source-filter voices (`voice`);
- `spkver.data.augment`: augmentation (noise, music, babble, reverberation, telephone channel);
- `spkver.data.examples`: training examples (speaker-balanced chunks, the feature cache, the loader).
"""
