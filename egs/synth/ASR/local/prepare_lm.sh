#!/usr/bin/env bash
# N-gram LMs on the train transcripts, and the decoding graphs (icefall's lang-dir layout).
#
# Usage (from anywhere; paths are relative to egs/synth/ASR):
#   bash egs/synth/ASR/local/prepare_lm.sh --lang-dir data/lang_bpe_500
#   bash egs/synth/ASR/local/prepare_lm.sh --lang-dir data/lang_bpe_128 --out-dir data/lang_bpe_128_lm
#
# Options (defaults in brackets):
#   --lang-dir D     a lang dir from prepare.sh stage 4 (bpe.model, tokens.txt, words.txt, lexicon*.txt,
#                    transcript_words.txt) [data/lang_bpe_500]
#   --out-dir O      where to write; when it differs from --lang-dir, the lang files are copied there
#                    first and --lang-dir is left untouched [= --lang-dir]
#   --orders "N ..." LM orders to train [3 4]
#   --hlg-order N    the order whose G is compiled into HLG (the others are for rescoring) [3]
#   --dev-text F     also print each LM's perplexity and OOV rate on these sentences [none]
#   --token-orders "N ..."  also train BPE-token LMs of these orders (words = the pieces of bpe.model), for
#                    transducer shallow fusion (decode --method modified-beam-lm --lm-arpa) [none]
#
# Writes into O (each step skipped when its output is newer than its inputs):
#   lexicon_disambig.txt, lexicon_char_disambig.txt, tokens_disambig.txt, L_disambig.fst  (prepare_lang)
#   G_<N>gram.arpa        interpolated modified Kneser-Ney, <UNK> as the unknown word   (asr_kd.bin.train_lm)
#   G_<N>gram.fst.txt     G from ARPA by kaldilm (#0 on backoff arcs)                   (python -m kaldilm)
#   tokens_<N>gram.arpa   the same estimator on the BPE pieces (--token-orders)            (train_lm --bpe-model)
#   HL.fst, HLG_G_<hlg-order>gram.fst (+ .json: input sha256, build time, states, arcs, size)  (compile_hlg)
set -euo pipefail

lang_dir=data/lang_bpe_500
out_dir=
orders="3 4"
hlg_order=3
dev_text=
token_orders=

source "$(dirname "${BASH_SOURCE[0]}")/parse_options.sh"  # --foo-bar V sets $foo_bar; -h / --help
out_dir="${out_dir:-$lang_dir}"

cd "$(dirname "${BASH_SOURCE[0]}")/.."
repo="$(cd ../../.. && pwd)"
if [ -x "$repo/.venv/bin/python" ]; then python="$repo/.venv/bin/python"; else python=python3; fi
export PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}"
log_tag=prepare_lm
source local/log.sh  # log
newer() { [ -f "$1" ] && [ "$1" -nt "$2" ]; }  # newer OUT IN: OUT exists and is newer than IN

text="$lang_dir/transcript_words.txt"
for f in bpe.model tokens.txt words.txt lexicon.txt transcript_words.txt; do
  [ -f "$lang_dir/$f" ] || { echo "prepare_lm.sh: $lang_dir/$f not found (run prepare.sh stage 4)" >&2; exit 1; }
done
if [ "$(cd "$lang_dir" && pwd)" != "$(mkdir -p "$out_dir" && cd "$out_dir" && pwd)" ]; then
  for f in bpe.model tokens.txt words.txt lexicon.txt lexicon_char.txt transcript_words.txt; do
    if [ -f "$lang_dir/$f" ] && ! cmp -s "$lang_dir/$f" "$out_dir/$f"; then cp -p "$lang_dir/$f" "$out_dir/$f"; fi
  done
  text="$out_dir/transcript_words.txt"
fi

log "disambiguation symbols and L_disambig in $out_dir"
vocab_size=$(grep -cv '^#[0-9]' "$out_dir/tokens.txt")
"$python" -m asr_kd.bin.prepare_lang --text "$text" --lang-dir "$out_dir" --vocab-size "$vocab_size"

for n in $orders; do
  arpa="$out_dir/G_${n}gram.arpa"
  if newer "$arpa" "$text"; then log "$arpa is up to date"; else
    log "training the ${n}-gram LM on $text"
    "$python" -m asr_kd.bin.train_lm --text "$text" --order "$n" --out "$arpa" ${dev_text:+--dev-text "$dev_text"}
  fi
  if newer "$out_dir/G_${n}gram.fst.txt" "$arpa"; then log "$out_dir/G_${n}gram.fst.txt is up to date"; else
    log "G_${n}gram.fst.txt with kaldilm"
    "$python" -m kaldilm --read-symbol-table="$out_dir/words.txt" --disambig-symbol='#0' --max-order="$n" \
      "$arpa" > "$out_dir/G_${n}gram.fst.txt.tmp" 2> "$out_dir/G_${n}gram.kaldilm.log"
    mv "$out_dir/G_${n}gram.fst.txt.tmp" "$out_dir/G_${n}gram.fst.txt"
  fi
done

for n in $token_orders; do
  arpa="$out_dir/tokens_${n}gram.arpa"
  if newer "$arpa" "$text" && newer "$arpa" "$out_dir/bpe.model"; then log "$arpa is up to date"; else
    log "training the BPE-token ${n}-gram LM on $text"
    "$python" -m asr_kd.bin.train_lm --text "$text" --order "$n" --bpe-model "$out_dir/bpe.model" --out "$arpa" \
      ${dev_text:+--dev-text "$dev_text"}
  fi
done

log "HL (no G) in $out_dir"
"$python" -m asr_kd.bin.compile_hlg --lang-dir "$out_dir"
log "HLG with the ${hlg_order}-gram in $out_dir"
"$python" -m asr_kd.bin.compile_hlg --lang-dir "$out_dir" --arpa "$out_dir/G_${hlg_order}gram.arpa"
log "done"
