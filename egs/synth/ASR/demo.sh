#!/usr/bin/env bash
# README's main command (`make demo`): the whole pipeline on the tiny synthetic corpus, on CPU.
#   1. prepare.sh --size tiny   -> data_tiny/ (espeak-ng speech, Lhotse manifests, BPE with 128 pieces:
#      with 500 pieces on 12 minutes of audio the xs model stays in the all-blank phase for minutes)
#   2. train a small Conformer-CTC (conf/conformer_ctc_xs.yaml) for DEMO_MINUTES minutes
#   3. average the last checkpoints, decode the held-out-voice test set (CTC greedy, prefix beam), print WER
#
# Usage:
#   bash egs/synth/ASR/demo.sh                 # ~5 min of training
#   DEMO_MINUTES=15 bash egs/synth/ASR/demo.sh # longer; re-running resumes the same experiment
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
minutes="${DEMO_MINUTES:-5}"
data=data_tiny
vocab=128
exp=exp/demo_conformer_ctc_xs

bash prepare.sh --size tiny --data-dir "$data" --vocab-size "$vocab"
bash run.sh --stage 1 --stop-stage 3 --config conf/conformer_ctc_xs.yaml --exp-dir "$exp" \
  --max-minutes "$minutes" --method ctc-greedy --decode-splits "test" \
  -- data.manifest_dir="$data/manifests" data.lang_dir="$data/lang_bpe_$vocab"
echo "demo: results in egs/synth/ASR/$exp/decode (recogs-*, errs-*, results.jsonl)"
