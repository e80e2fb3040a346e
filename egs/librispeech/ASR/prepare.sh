#!/usr/bin/env bash
# Prepare LibriSpeech (lhotse's recipe, icefall file naming) for asr_kd.
#
# Usage (from anywhere; the script cd's to egs/librispeech/ASR):
#   # online: download train-clean-100 + dev/test clean/other from openslr.org, then prepare
#   bash egs/librispeech/ASR/prepare.sh
#   # offline, an existing copy (the directory holding train-clean-100/, dev-clean/, ...):
#   bash egs/librispeech/ASR/prepare.sh --stage 1 --corpus-dir /data/LibriSpeech
#   # all 960 h, a 500-piece BPE, precomputed fbank:
#   bash egs/librispeech/ASR/prepare.sh --corpus-dir /data/LibriSpeech \
#     --parts "train-clean-100 train-clean-360 train-other-500 dev-clean dev-other test-clean test-other" \
#     --precompute-fbank true --nj 8
#
# Options (defaults in brackets):
#   --stage N / --stop-stage M   run stages N..M [0 / 3]
#   --corpus-dir D               LibriSpeech directory [download/LibriSpeech]
#   --parts "P ..."              parts to prepare; the train-* ones train the BPE
#                                ["train-clean-100 dev-clean dev-other test-clean test-other"]
#   --vocab-size V               BPE pieces, specials included [500]
#   --nj J                       parallel jobs [2]
#   --precompute-fbank B         true: stage 3 stores 80-bin lilcom fbank; false: on the fly [false]
#   --data-dir D                 output directory, relative to egs/librispeech/ASR [data]
#
# Stages (each is skipped when its outputs exist):
#   0  download the parts into the parent of --corpus-dir (skipped when --corpus-dir has them all)
#   1  Lhotse manifests -> $data/manifests/librispeech_{recordings,supervisions,cuts}_<part>.jsonl.gz
#   2  BPE model + lexicons on the train-* transcripts -> $data/lang_bpe_${vocab_size}/
#   3  (only with --precompute-fbank true) fbank -> $data/fbank/librispeech_cuts_<part>.jsonl.gz
set -euo pipefail

stage=0
stop_stage=3
corpus_dir=download/LibriSpeech
parts="train-clean-100 dev-clean dev-other test-clean test-other"
vocab_size=500
nj=2
precompute_fbank=false
data_dir=data

# the one option parser of the recipes, egs/synth/ASR/local/parse_options.sh (by its relative path)
source "$(dirname "${BASH_SOURCE[0]}")/../../synth/ASR/local/parse_options.sh"  # --foo-bar V sets $foo_bar
data="$data_dir"

cd "$(dirname "${BASH_SOURCE[0]}")"
repo="$(cd ../../.. && pwd)"
if [ -x "$repo/.venv/bin/python" ]; then python="$repo/.venv/bin/python"; else python=python3; fi
export PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}"

t_start=$(date +%s)
log() { echo "[prepare $(date '+%H:%M:%S') +$(( $(date +%s) - t_start ))s] $*"; }
run_stage() { [ "$stage" -le "$1" ] && [ "$stop_stage" -ge "$1" ]; }
timed() {
  local n="$1" what="$2" t0; shift 2
  t0=$(date +%s)
  log "stage $n: $what"
  "$@"
  log "stage $n done in $(( $(date +%s) - t0 ))s"
}

read -r -a part_list <<< "$parts"
train_parts=()
for p in "${part_list[@]}"; do case "$p" in train*) train_parts+=("$p") ;; esac; done
lang="$data/lang_bpe_${vocab_size}"
mkdir -p "$data"

stage0() {
  local missing=()
  for p in "${part_list[@]}"; do [ -d "$corpus_dir/$p" ] || missing+=("$p"); done
  if [ ${#missing[@]} -eq 0 ]; then log "stage 0: $corpus_dir has all parts; skipping"; return; fi
  "$python" -m asr_kd.corpus.librispeech download --target-dir "$(dirname "$corpus_dir")" --parts "${missing[@]}"
}
stage1() {
  local todo=()
  for p in "${part_list[@]}"; do
    [ -f "$data/manifests/librispeech_cuts_$p.jsonl.gz" ] || todo+=("$p")
  done
  if [ ${#todo[@]} -eq 0 ]; then log "stage 1: manifests exist; skipping"; return; fi
  "$python" -m asr_kd.corpus.librispeech prepare --corpus-dir "$corpus_dir" --out-dir "$data/manifests" \
    --parts "${todo[@]}" --nj "$nj"
}
stage2() {
  if [ ${#train_parts[@]} -eq 0 ]; then log "stage 2: no train-* part in --parts; skipping"; return; fi
  local sups=() force=()
  for p in "${train_parts[@]}"; do sups+=("$data/manifests/librispeech_supervisions_$p.jsonl.gz"); done
  "$python" -m asr_kd.corpus.transcripts "${sups[@]}" --out "$lang/transcript_words.txt"
  if [ -f "$lang/bpe.model" ] && [ "$lang/transcript_words.txt" -nt "$lang/bpe.model" ]; then force=(--force); fi
  "$python" -m asr_kd.bin.prepare_lang --text "$lang/transcript_words.txt" --lang-dir "$lang" \
    --vocab-size "$vocab_size" "${force[@]}"
}
stage3() {
  if [ "$precompute_fbank" != true ]; then log "stage 3: --precompute-fbank false; features are computed on the fly"; return; fi
  "$python" -m asr_kd.corpus.features --in-dir "$data/manifests" --out-dir "$data/fbank" \
    --prefix librispeech --splits "${part_list[@]}" --nj "$nj"
}

log "parts: ${part_list[*]}; corpus: $corpus_dir; stages $stage..$stop_stage; python=$python"
if run_stage 0; then timed 0 "download" stage0; fi
if run_stage 1; then timed 1 "Lhotse manifests" stage1; fi
if run_stage 2; then timed 2 "BPE model ($vocab_size) and lexicons in $lang" stage2; fi
if run_stage 3; then timed 3 "fbank features" stage3; fi
log "all done"
