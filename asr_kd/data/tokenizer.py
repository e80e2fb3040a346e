"""SentencePiece tokenizer with the icefall id conventions, and deterministic BPE training.

Id layout of every model trained by :func:`train_bpe`:

====  ============  ==========================================================
 id   piece         role
====  ============  ==========================================================
 0    ``<blk>``     blank of CTC / transducer (a *control* symbol)
 1    ``<sos/eos>`` start/end of sentence for attention decoders (control)
 2    ``<unk>``     unknown; :meth:`Tokenizer.encode` never returns it
 3..  pieces        ``▁``-prefixed word starts and word-internal pieces
====  ============  ==========================================================

This is icefall's layout (``<blk>`` = 0, ``<sos/eos>`` = 1, ``unk_id`` = 2) with one deliberate
difference: ``<blk>`` and ``<sos/eos>`` are SentencePiece *control* symbols rather than
user-defined ones, so a literal ``"<blk>"`` in a transcript can never be encoded as the blank.
SentencePiece's own ``<s>``/``</s>`` are disabled (``bos_id = eos_id = -1``).

Training is deterministic: the sentences are fed through an iterator (so no file path ends up in
the model's trainer spec), the random generator is seeded, training runs on one thread, and the
input is not sub-sampled. Two runs on the same text give byte-identical ``bpe.model`` files.

Files written into ``lang_dir`` by :func:`train_bpe`:

- ``bpe.model``        the SentencePiece model
- ``tokens.txt``       ``<piece> <id>`` per line, all ids in order
- ``words.txt``        ``<word> <id>``: ``<eps>`` 0, ``<UNK>`` 1, the sorted training words,
                       then ``#0``, ``<s>``, ``</s>`` (the k2 word-symbol-table convention)
- ``lexicon.txt``      ``<word> <piece> <piece> ...`` (BPE lexicon; ``<UNK> <unk>`` first)
- ``lexicon_char.txt`` ``<word> <char> <char> ...`` (character lexicon)
"""

from __future__ import annotations

import io
import logging
from collections.abc import Iterable, Sequence
from pathlib import Path

import sentencepiece as spm

log = logging.getLogger(__name__)

BLANK = "<blk>"
SOS_EOS = "<sos/eos>"
UNK = "<unk>"
WORD_BOUNDARY = "\u2581"  # "▁", SentencePiece's word-start marker

BPE_MODEL = "bpe.model"
TOKENS_TXT = "tokens.txt"
WORDS_TXT = "words.txt"
LEXICON_TXT = "lexicon.txt"
LEXICON_CHAR_TXT = "lexicon_char.txt"
LANG_FILES = (BPE_MODEL, TOKENS_TXT, WORDS_TXT, LEXICON_TXT, LEXICON_CHAR_TXT)


class UntokenizableError(ValueError):
    """The text is empty, or contains characters the model cannot represent (would give ``<unk>``)."""


def tokens_digest(tokens: Sequence[str]) -> str:
    """sha256 (hex) of the pieces ``[piece(0), ..., piece(V - 1)]``: a vocabulary's fingerprint."""
    import hashlib

    return hashlib.sha256("\n".join(tokens).encode("utf-8")).hexdigest()


class VocabMismatchError(ValueError):
    """A lang dir's tokenizer is not the one a model was trained with (sizes or pieces differ)."""


def check_vocab(
    tokenizer: Tokenizer,
    vocab_size: int,
    tokens: Sequence[str] | None = None,
    *,
    lang_dir: str | Path | None = None,
    model: str | Path | None = None,
    model_lang_dir: str | Path | None = None,
) -> None:
    """Check that ``tokenizer`` is the model's: ``V`` equal, and the pieces equal id by id when the
    model's ``tokens`` (``[piece(0), ..., piece(V - 1)]``, stored in training checkpoints'
    ``meta["tokens"]``) are known.

    Args:
        tokenizer: the tokenizer about to be used (from ``lang_dir``).
        vocab_size: ``V`` of the model's output layer.
        tokens: the model's pieces, when the checkpoint stores them (None: only ``V`` is compared).
        lang_dir, model, model_lang_dir: named in the error (the lang dir given, the checkpoint, the
            lang dir the model was trained with).

    Raises:
        VocabMismatchError: naming both sizes (or the first differing piece) and the dirs.
    """
    given = f"the lang dir {lang_dir}" if lang_dir is not None else f"the tokenizer {tokenizer.model_file}"
    of_model = f"the model {model}" if model is not None else "the model"
    hint = (
        f"; use the lang dir it was trained with ({model_lang_dir})"
        if model_lang_dir is not None and str(model_lang_dir) != str(lang_dir)
        else "; use the lang dir the model was trained with"
    )
    if int(tokenizer.vocab_size) != int(vocab_size):
        raise VocabMismatchError(
            f"vocabulary mismatch: {given} has {tokenizer.vocab_size} BPE pieces but {of_model} outputs "
            f"{vocab_size} tokens{hint}"
        )
    if tokens is not None:
        mine = tokenizer.tokens()
        if len(tokens) != len(mine):
            raise VocabMismatchError(
                f"vocabulary mismatch: {given} has {len(mine)} BPE pieces but {of_model} was trained with "
                f"{len(tokens)}{hint}"
            )
        for i, (a, b) in enumerate(zip(mine, tokens)):
            if a != b:
                raise VocabMismatchError(
                    f"vocabulary mismatch: {given} and {of_model} both have {len(mine)} pieces, but they differ "
                    f"(first at id {i}: {a!r} in the lang dir, {b!r} in the model){hint}"
                )


class Tokenizer:
    """A SentencePiece model with icefall's special ids (see the module docstring).

    Text is split on whitespace and re-joined with single spaces before encoding, so tabs,
    newlines and repeated spaces are harmless; every other character must be in the model's
    alphabet, otherwise :meth:`encode` raises :class:`UntokenizableError`.
    """

    def __init__(self, model_file: str | Path):
        self.model_file = Path(model_file)
        self._sp = spm.SentencePieceProcessor()
        self._sp.Load(str(self.model_file))
        self._blank_id = self._sp.PieceToId(BLANK)
        self._sos_eos_id = self._sp.PieceToId(SOS_EOS)
        if self._sp.IdToPiece(self._blank_id) != BLANK or self._blank_id != 0:
            raise ValueError(f"{model_file}: {BLANK!r} must be id 0 (train with asr_kd's train_bpe)")
        if self._sp.IdToPiece(self._sos_eos_id) != SOS_EOS:
            raise ValueError(f"{model_file}: no {SOS_EOS!r} piece (train with asr_kd's train_bpe)")
        self._alphabet = frozenset(
            ch
            for i in range(self._sp.GetPieceSize())
            if not (self._sp.IsControl(i) or self._sp.IsUnknown(i))
            for ch in self._sp.IdToPiece(i).replace(WORD_BOUNDARY, "")
        )

    @classmethod
    def from_dir(cls, lang_dir: str | Path) -> Tokenizer:
        """Load ``<lang_dir>/bpe.model``; a WordPiece lang dir (``wordpiece.json``, no ``bpe.model``) gives a
        :class:`~asr_kd.data.wordpiece_tokenizer.WordPieceTokenizer` with the same interface."""
        lang_dir = Path(lang_dir)
        if not (lang_dir / BPE_MODEL).is_file():
            from asr_kd.data.wordpiece_tokenizer import WORDPIECE_JSON, WordPieceTokenizer  # noqa: PLC0415

            if (lang_dir / WORDPIECE_JSON).is_file():
                return WordPieceTokenizer(lang_dir)  # type: ignore[return-value]
        return cls(lang_dir / BPE_MODEL)

    # ------------------------------------------------------------------ ids
    @property
    def vocab_size(self) -> int:
        """Number of pieces, specials included (the output dimension of a model)."""
        return self._sp.GetPieceSize()

    @property
    def blank_id(self) -> int:
        return self._blank_id

    @property
    def unk_id(self) -> int:
        return self._sp.unk_id()

    @property
    def sos_id(self) -> int:
        return self._sos_eos_id

    @property
    def eos_id(self) -> int:
        return self._sos_eos_id

    @property
    def alphabet(self) -> frozenset[str]:
        """Characters the model can encode (space excluded)."""
        return self._alphabet

    def tokens(self) -> list[str]:
        """The pieces in id order, ``[piece(0), ..., piece(V - 1)]`` (what ``tokens.txt`` lists)."""
        return [self._sp.IdToPiece(i) for i in range(self.vocab_size)]

    def id_to_piece(self, idx: int) -> str:
        if not 0 <= idx < self.vocab_size:
            raise IndexError(f"token id {idx} out of range [0, {self.vocab_size})")
        return self._sp.IdToPiece(int(idx))

    def piece_to_id(self, piece: str) -> int:
        """Id of ``piece``; the ``<unk>`` id for a piece that is not in the vocabulary."""
        return self._sp.PieceToId(piece)

    # ------------------------------------------------------------------ encode / decode
    def encode(self, text: str) -> list[int]:
        """Token ids of ``text``; never contains blank, ``<sos/eos>`` or ``<unk>``.

        Raises:
            UntokenizableError: ``text`` is empty / whitespace-only, or has characters outside
                :attr:`alphabet` (the message lists them).
        """
        clean = " ".join(text.split())
        if not clean:
            raise UntokenizableError(f"cannot tokenize empty text {text!r}")
        bad = sorted({ch for ch in clean if ch != " " and ch not in self._alphabet})
        if bad:
            raise UntokenizableError(f"characters {bad} are not in the tokenizer's alphabet (text: {text!r})")
        ids = self._sp.EncodeAsIds(clean)
        if self.unk_id in ids:  # should not happen once the alphabet check passed
            raise UntokenizableError(f"text {text!r} encodes to {UNK}")
        return ids

    def encode_batch(self, texts: Iterable[str]) -> list[list[int]]:
        return [self.encode(t) for t in texts]

    def decode(self, ids: Sequence[int]) -> str:
        """Text of ``ids``; blank and ``<sos/eos>`` ids are dropped."""
        return self._sp.DecodeIds([int(i) for i in ids])

    def decode_batch(self, batch: Iterable[Sequence[int]]) -> list[str]:
        return [self.decode(ids) for ids in batch]

    def encode_as_pieces(self, text: str) -> list[str]:
        return [self.id_to_piece(i) for i in self.encode(text)]

    def __repr__(self) -> str:
        return f"Tokenizer({str(self.model_file)!r}, vocab_size={self.vocab_size})"


# ---------------------------------------------------------------------- training
def _read_sentences(texts_file: Path) -> list[str]:
    out = []
    with open(texts_file, encoding="utf-8") as f:
        for line in f:
            line = " ".join(line.split())
            if line:
                out.append(line)
    if not out:
        raise ValueError(f"{texts_file}: no text to train on")
    return out


def train_bpe(
    texts_file: str | Path,
    lang_dir: str | Path,
    vocab_size: int,
    model_type: str = "unigram",
    seed: int = 42,
    hard_vocab_limit: bool = False,
) -> Tokenizer:
    """Train a SentencePiece model on ``texts_file`` (one sentence per line) into ``lang_dir``.

    Args:
        texts_file: normalised training transcripts, one per line.
        lang_dir: output directory (created); receives the files listed in the module docstring.
        vocab_size: requested number of pieces, specials included.
        model_type: ``"unigram"`` (icefall's default) or ``"bpe"``.
        seed: seed of SentencePiece's random generator.
        hard_vocab_limit: when False (default) a corpus too small for ``vocab_size`` yields a
            smaller vocabulary instead of an error; check :attr:`Tokenizer.vocab_size`.

    Returns:
        The trained :class:`Tokenizer`.
    """
    if model_type not in ("unigram", "bpe"):
        raise ValueError(f"model_type must be 'unigram' or 'bpe', not {model_type!r}")
    texts_file, lang_dir = Path(texts_file), Path(lang_dir)
    lang_dir.mkdir(parents=True, exist_ok=True)
    sentences = _read_sentences(texts_file)

    spm.set_random_generator_seed(seed)
    model = io.BytesIO()
    spm.SentencePieceTrainer.Train(
        sentence_iterator=iter(sentences),
        model_writer=model,
        vocab_size=vocab_size,
        model_type=model_type,
        character_coverage=1.0,
        byte_fallback=False,
        normalization_rule_name="identity",
        control_symbols=[BLANK, SOS_EOS],
        unk_id=2,
        bos_id=-1,
        eos_id=-1,
        pad_id=-1,
        hard_vocab_limit=hard_vocab_limit,
        num_threads=1,
        shuffle_input_sentence=False,
        input_sentence_size=0,
        max_sentence_length=100000,
        minloglevel=2,
    )
    model_path = lang_dir / BPE_MODEL
    model_path.write_bytes(model.getvalue())
    tok = Tokenizer(model_path)
    write_lang_files(tok, sentences, lang_dir)
    log.info("trained %s (%d pieces) on %d sentences", model_path, tok.vocab_size, len(sentences))
    return tok


def install_bpe(
    model_file: str | Path, texts_file: str | Path, lang_dir: str | Path, vocab_size: int | None = None
) -> Tokenizer:
    """Use an existing SentencePiece model (e.g. a teacher's) as ``lang_dir``'s BPE model.

    Copies ``model_file`` to ``<lang_dir>/bpe.model`` and writes the other lang files (tokens, and the
    words and lexicons of ``texts_file``'s transcripts) as :func:`train_bpe` does, so a student trained on
    new transcripts shares the model's token ids.

    Raises:
        FileNotFoundError: ``model_file`` is missing.
        ValueError: ``model_file`` is not a SentencePiece model, its specials are not the project's
            (``<blk>`` = 0, ``<sos/eos>`` = 1, ``<unk>`` = 2), or its size differs from ``vocab_size``.
    """
    model_file, lang_dir = Path(model_file), Path(lang_dir)
    if not model_file.is_file():
        raise FileNotFoundError(f"BPE model {model_file} not found")
    try:
        tok = Tokenizer(model_file)
    except Exception as e:  # sentencepiece raises RuntimeError/OSError on a garbled file
        raise ValueError(f"{model_file} is not a SentencePiece model ({type(e).__name__}: {e})") from e
    specials = [tok.id_to_piece(i) for i in range(min(3, tok.vocab_size))]
    if specials != [BLANK, SOS_EOS, UNK]:
        raise ValueError(f"{model_file}: ids 0-2 are {specials}, expected {[BLANK, SOS_EOS, UNK]}")
    if vocab_size is not None and tok.vocab_size != vocab_size:
        raise ValueError(f"{model_file} has {tok.vocab_size} pieces, not the requested {vocab_size} (--vocab-size)")
    sentences = _read_sentences(Path(texts_file))
    lang_dir.mkdir(parents=True, exist_ok=True)
    target = lang_dir / BPE_MODEL
    tmp = target.with_suffix(".model.tmp")
    tmp.write_bytes(model_file.read_bytes())
    tmp.replace(target)
    tok = Tokenizer(target)
    write_lang_files(tok, sentences, lang_dir)
    log.info(
        "installed %s (%d pieces) as %s; lexicons from %d sentences", model_file, tok.vocab_size, target, len(sentences)
    )
    return tok


def _words(sentences: Iterable[str]) -> list[str]:
    return sorted({w for s in sentences for w in s.split()})


def write_lang_files(tok: Tokenizer, sentences: Iterable[str], lang_dir: str | Path) -> None:
    """Write ``tokens.txt``, ``words.txt``, ``lexicon.txt`` and ``lexicon_char.txt``."""
    lang_dir = Path(lang_dir)
    words = _words(sentences)
    with open(lang_dir / TOKENS_TXT, "w", encoding="utf-8") as f:
        for i in range(tok.vocab_size):
            f.write(f"{tok.id_to_piece(i)} {i}\n")
    with open(lang_dir / WORDS_TXT, "w", encoding="utf-8") as f:
        for i, w in enumerate(["<eps>", "<UNK>", *words, "#0", "<s>", "</s>"]):
            f.write(f"{w} {i}\n")
    with open(lang_dir / LEXICON_TXT, "w", encoding="utf-8") as f:
        f.write(f"<UNK> {UNK}\n")
        for w in words:
            f.write(f"{w} {' '.join(tok.encode_as_pieces(w))}\n")
    with open(lang_dir / LEXICON_CHAR_TXT, "w", encoding="utf-8") as f:
        for w in words:
            f.write(f"{w} {' '.join(w)}\n")


def read_lexicon(path: str | Path) -> dict[str, list[str]]:
    """Read a ``word unit unit ...`` lexicon into ``{word: [units]}``."""
    out: dict[str, list[str]] = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            parts = line.split()
            if parts:
                out[parts[0]] = parts[1:]
    return out


def read_symbol_table(path: str | Path) -> dict[str, int]:
    """Read a ``symbol id`` table (``tokens.txt`` / ``words.txt``) into ``{symbol: id}``."""
    out: dict[str, int] = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            sym, idx = line.split()
            out[sym] = int(idx)
    return out
