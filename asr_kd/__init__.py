"""asr_kd: knowledge distillation for end-to-end ASR, k2/icefall style.

Sub-packages (each a concern of its own):

- :mod:`asr_kd.data`     Lhotse manifests -> padded fbank batches, tokenizer, augmentation.
- :mod:`asr_kd.corpus`   corpus preparation (the synthetic espeak-ng corpus, LibriSpeech).
- :mod:`asr_kd.ops`      Python face of the native extension ``asr_kd._C`` with pure-PyTorch references.
"""

__version__ = "0.1.0"
