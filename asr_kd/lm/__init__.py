"""N-gram language models and the lang-dir files of WFST graphs.

- :mod:`asr_kd.lm.ngram`: interpolated modified Kneser-Ney estimation, written as ARPA;
- :mod:`asr_kd.lm.arpa`: a validating ARPA reader and back-off scorer;
- :mod:`asr_kd.lm.query`: word-by-word ARPA scores with a history-tuple state (kenlm's semantics);
- :mod:`asr_kd.lm.lang`: checked symbol tables and lexicons, disambiguation symbols, L_disambig;
- :mod:`asr_kd.lm.char_lang`: a character lang dir (tokens = characters).
"""
