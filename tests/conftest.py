"""Shared pytest fixtures: tiny audio manifests and a tiny tokenizer, built on the fly.

- ``dummy_cuts``: 8 cuts of 0.8-2.0 s sine+noise audio, one supervision each (``asr_kd.testing``).
- ``tiny_tokenizer``: a SentencePiece model trained once per session on ``DUMMY_TEXTS``.
- ``encoder_type``: each registered encoder type with a tiny config (``asr_kd.testing.encoders``); a
  test taking it runs once per encoder.
"""

from __future__ import annotations

import pytest

from asr_kd.testing import DUMMY_TEXTS, make_cutset

DUMMY_DURATIONS = (1.0, 1.3, 0.8, 2.0, 1.6, 1.1, 0.9, 1.7)


@pytest.fixture
def dummy_cuts(tmp_path):
    """An eager CutSet of 8 cuts (ids ``cut-0000`` ... ``cut-0007``) with wavs under ``tmp_path``."""
    return make_cutset(tmp_path / "audio", DUMMY_DURATIONS)


@pytest.fixture(scope="session")
def tiny_tokenizer(tmp_path_factory):
    """A unigram tokenizer over ``DUMMY_TEXTS`` (alphabet: A-Z, apostrophe)."""
    tokenizer = pytest.importorskip("asr_kd.data.tokenizer")
    lang_dir = tmp_path_factory.mktemp("lang")
    texts = lang_dir / "texts.txt"
    texts.write_text("\n".join(DUMMY_TEXTS) + "\n", encoding="utf-8")
    return tokenizer.train_bpe(texts, lang_dir, vocab_size=60)


def pytest_generate_tests(metafunc):
    """``encoder_type``: a test taking it runs once per encoder type of
    ``asr_kd.testing.encoders.tiny_encoder_types()`` (build one with ``tiny_encoder_config``)."""
    if "encoder_type" in metafunc.fixturenames:
        from asr_kd.testing.encoders import tiny_encoder_types

        metafunc.parametrize("encoder_type", tiny_encoder_types())


@pytest.fixture
def k2():
    """The k2 module; the test is skipped with the reason when k2 is not importable (it fails
    instead under ``ASR_KD_REQUIRE_K2=1``, which ``.ci/run`` sets when it installed k2)."""
    from asr_kd.testing.optional import require_k2

    return require_k2()
