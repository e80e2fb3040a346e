#!/usr/bin/env bash
# Prepare the embedded synthetic English corpus (espeak-ng speech of WordNet / fortunes sentences).
#
# Usage (from anywhere; the script cd's to egs/synth/ASR):
#   bash egs/synth/ASR/prepare.sh --size tiny                 # ~400 utterances, well under a minute
#   bash egs/synth/ASR/prepare.sh --size default --nj 2       # >= 10 h train, 600 dev, 600 test
#   bash egs/synth/ASR/prepare.sh --stage 4 --stop-stage 4 --vocab-size 256   # another BPE only
#   bash egs/synth/ASR/prepare.sh --size default --precompute-fbank true      # + lilcom fbank
#   bash egs/synth/ASR/prepare.sh --stage 6 --stop-stage 6 --vocab-size 128   # 3/4-gram LMs + HL/HLG graphs
#   bash egs/synth/ASR/prepare.sh --size small --vocab-size 128 --bpe-model pretrained/zipformer_transducer_s/bpe.model
#
# Options (defaults in brackets):
#   --stage N / --stop-stage M   run stages N..M [0 / 5]
#   --size tiny|small|default    utterances per split: 300/50/50, 3000/300/300, 18000/600/600 [tiny]
#   --seed S                     text split, voices, speeds and pitches [42]
#   --vocab-size V               BPE pieces, specials included [500]
#   --bpe-model PATH             stage 4: this BPE model (e.g. a KD teacher's; V pieces; relative to egs/synth/ASR)
#                                instead of a new one []
#   --nj J                       parallel jobs [2]
#   --precompute-fbank B         true: stage 5 stores 80-bin fbank; false: computed on the fly [false]
#   --lm-orders "N ..."          stage 6: n-gram LM orders; HLG uses the first [3 4]
#   --token-lm-orders "N ..."    stage 6: also BPE-token LMs of these orders, for transducer shallow fusion
#                                (decode --method modified-beam-lm --lm-arpa $lang/tokens_<N>gram.arpa) [none]
#   --data-dir D                 output directory, relative to egs/synth/ASR [data]
#   --download-dir D             cache of the Debian .debs [download]
#
# Stages (each is skipped when its outputs exist):
#   0  download the text sources (apt-get download wordnet-base fortunes; dpkg-deb -x)
#   1  normalise, filter, deduplicate and split the sentences -> $data/text/{train,dev,test}.txt
#   2  synthesise with espeak-ng (train voices / held-out voices) -> $data/synth/{plan_*.tsv,audio/}
#   3  Lhotse manifests -> $data/manifests/synth_{recordings,supervisions,cuts}_{train,dev,test}.jsonl.gz
#   4  BPE model + lexicons on the train transcripts -> $data/lang_bpe_${vocab_size}/ (--bpe-model: that model,
#      lexicons of the train transcripts)
#   5  (only with --precompute-fbank true) fbank -> $data/fbank/synth_cuts_{train,dev,test}.jsonl.gz
#   6  (opt-in: --stop-stage 6) modified Kneser-Ney LMs on the train transcripts, kaldilm G, the disambiguated
#      lexicons, L_disambig and the cached HL / HLG graphs -> $data/lang_bpe_${vocab_size}/ (local/prepare_lm.sh)
#   7  (opt-in: --stage 7 --stop-stage 7) document ids for context augmentation (asr_kd.corpus.documents):
#      $data/text/documents.tsv from the sources, then doc_id / doc_pos added in place to the supervisions and
#      cuts of $data/manifests and $data/fbank (a corpus prepared before stage 3 wrote them; idempotent)
#
# Stage 2 first checks the free disk (wav, and fbank with --precompute-fbank true; ASR_KD_FREE_BYTES overrides
# the measured free bytes). The BPE model is trained on the transcripts of the synthesised train split ($lang/transcript_words.txt),
# and retrained when they change. Changing --size or --seed re-runs stages 2-5 (wavs are reused: the
# plan of a smaller size is a prefix of that of a larger one with the same seed).
set -euo pipefail

stage=0
stop_stage=5
size=tiny
seed=42
vocab_size=500
nj=2
precompute_fbank=false
data_dir=data
download_dir=download
lm_orders="3 4"
token_lm_orders=
bpe_model=

source "$(dirname "${BASH_SOURCE[0]}")/local/parse_options.sh"  # --foo-bar V sets $foo_bar; -h / --help
data="$data_dir"
download="$download_dir"
case "$size" in tiny|small|default) ;; *) echo "prepare.sh: --size must be tiny, small or default" >&2; exit 1 ;; esac

cd "$(dirname "${BASH_SOURCE[0]}")"
repo="$(cd ../../.. && pwd)"
if [ -x "$repo/.venv/bin/python" ]; then python="$repo/.venv/bin/python"; else python=python3; fi
export PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}"

log_tag=prepare
source local/log.sh  # log, run_stage, timed

mkdir -p "$data"
lang="$data/lang_bpe_${vocab_size}"
tag="size-${size}_seed-${seed}"

stage0() { "$python" -m asr_kd.corpus.text download --dir "$download"; }
stage1() {
  if [ -f "$data/text/.done_seed-${seed}" ]; then log "stage 1: $data/text exists; skipping"; return; fi
  rm -f "$data"/text/.done_*
  "$python" -m asr_kd.corpus.text prepare --download-dir "$download" --out-dir "$data/text" --seed "$seed"
  "$python" -m asr_kd.corpus.documents make --download-dir "$download" --text-dir "$data/text"
  touch "$data/text/.done_seed-${seed}"
}
stage2() {
  if [ -f "$data/synth/.done_${tag}" ]; then log "stage 2: $data/synth ($tag) exists; skipping"; return; fi
  rm -f "$data"/synth/.done_*
  local fbank=()
  [ "$precompute_fbank" != true ] || fbank=(--with-fbank)
  "$python" -m asr_kd.corpus.synth synthesize --text-dir "$data/text" --out-dir "$data/synth" \
    --size "$size" --seed "$seed" --nj "$nj" "${fbank[@]}"
  touch "$data/synth/.done_${tag}"
}
stage3() {
  if [ -f "$data/manifests/.done_${tag}" ]; then log "stage 3: $data/manifests ($tag) exists; skipping"; return; fi
  rm -f "$data"/manifests/.done_*
  local docs=()
  [ ! -f "$data/text/documents.tsv" ] || docs=(--documents "$data/text/documents.tsv")
  "$python" -m asr_kd.corpus.synth manifests --synth-dir "$data/synth" --out-dir "$data/manifests" ${docs[@]+"${docs[@]}"}
  touch "$data/manifests/.done_${tag}"
}
stage4() {
  local force=() bpe=()
  [ -z "$bpe_model" ] || bpe=(--bpe-model "$bpe_model")
  "$python" -m asr_kd.corpus.transcripts "$data/manifests/synth_supervisions_train.jsonl.gz" \
    --out "$lang/transcript_words.txt"
  if [ -f "$lang/bpe.model" ] && [ "$lang/transcript_words.txt" -nt "$lang/bpe.model" ]; then force=(--force); fi
  "$python" -m asr_kd.bin.prepare_lang --text "$lang/transcript_words.txt" --lang-dir "$lang" \
    --vocab-size "$vocab_size" "${force[@]}" "${bpe[@]}"
}
stage5() {
  if [ "$precompute_fbank" != true ]; then log "stage 5: --precompute-fbank false; features are computed on the fly"; return; fi
  if [ -f "$data/fbank/.done_${tag}" ]; then log "stage 5: $data/fbank ($tag) exists; skipping"; return; fi
  rm -rf "$data/fbank"
  "$python" -m asr_kd.corpus.features --in-dir "$data/manifests" --out-dir "$data/fbank" \
    --prefix synth --splits train dev test --nj "$nj"
  touch "$data/fbank/.done_${tag}"
}
stage6() {
  local hlg_order
  hlg_order="$(echo "$lm_orders" | awk '{print $1}')"
  local dev=()
  if [ -f "$data/manifests/synth_supervisions_dev.jsonl.gz" ]; then
    "$python" -m asr_kd.corpus.transcripts "$data/manifests/synth_supervisions_dev.jsonl.gz" --out "$lang/transcript_words_dev.txt"
    dev=(--dev-text "$lang/transcript_words_dev.txt")
  fi
  local tok=()
  if [ -n "$token_lm_orders" ]; then tok=(--token-orders "$token_lm_orders"); fi
  bash local/prepare_lm.sh --lang-dir "$lang" --orders "$lm_orders" --hlg-order "$hlg_order" "${dev[@]}" \
    ${tok[@]+"${tok[@]}"}
}

stage7() {
  [ -f "$data/text/documents.tsv" ] || \
    "$python" -m asr_kd.corpus.documents make --download-dir "$download" --text-dir "$data/text"
  local m=()
  for f in "$data"/manifests/synth_supervisions_*.jsonl.gz "$data"/manifests/synth_cuts_*.jsonl.gz \
           "$data"/fbank/synth_cuts_*.jsonl.gz; do
    [ ! -f "$f" ] || m+=("$f")
  done
  [ ${#m[@]} -eq 0 ] || "$python" -m asr_kd.corpus.documents add --documents "$data/text/documents.tsv" "${m[@]}"
}

log "size=$size seed=$seed vocab_size=$vocab_size nj=$nj stages $stage..$stop_stage, python=$python"
if run_stage 0; then timed 0 "download text sources into $download" stage0; fi
if run_stage 1; then timed 1 "normalise and split the text" stage1; fi
if run_stage 2; then timed 2 "synthesise ($size) with espeak-ng" stage2; fi
if run_stage 3; then timed 3 "Lhotse manifests" stage3; fi
if run_stage 4; then timed 4 "BPE model ($vocab_size) and lexicons in $lang" stage4; fi
if run_stage 5; then timed 5 "fbank features" stage5; fi
if run_stage 6; then timed 6 "n-gram LMs ($lm_orders) and HL/HLG graphs in $lang" stage6; fi
if run_stage 7; then timed 7 "document ids (doc_id, doc_pos) in the manifests" stage7; fi
log "all done"
