"""Corpus preparation: the embedded synthetic espeak-ng corpus, LibriSpeech, statistics.

- :mod:`asr_kd.corpus.normalize`  written English -> ``A-Z'`` spoken-form transcripts
- :mod:`asr_kd.corpus.text`       sentences from Debian's WordNet and fortunes, deduplicated and split
- :mod:`asr_kd.corpus.voices`     espeak-ng voices (accent + variant), train vs held-out
- :mod:`asr_kd.corpus.synth`      parallel, resumable espeak-ng synthesis and Lhotse manifests
- :mod:`asr_kd.corpus.features`   optional precomputed fbank (lilcom) for any cut manifests
- :mod:`asr_kd.corpus.stats`      corpus statistics as a markdown table
"""
