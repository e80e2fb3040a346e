"""Command-line entry points (``python -m asr_kd.bin.<name>``)."""
