#!/usr/bin/env bash
# KD experiment runner: train the baseline and the KD student with the same data, seed, steps and size,
# decode both, and append the results to docs/RESULTS.md.
#
# Usage (from anywhere; the script cd's to egs/synth/ASR; needs prepare.sh --size default --precompute-fbank true):
#   bash egs/synth/ASR/run_kd.sh self_kd                 # self-KD (final CTC -> layer-4 CTC), vs the 4-layer model alone
#   bash egs/synth/ASR/run_kd.sh self_kd_blank           # ... with blank-frame masking
#   bash egs/synth/ASR/run_kd.sh self_kd_late            # self-KD, alpha ramped from 40 % to 70 % of training
#   bash egs/synth/ASR/run_kd.sh self_kd_late_blank      # ... with blank-frame masking
#   bash egs/synth/ASR/run_kd.sh ctc_inter               # the self-KD control: the same 7-layer model, no KD term
#   bash egs/synth/ASR/run_kd.sh ctc_kd                # conventional frame KD from the committed pretrained teacher
#   bash egs/synth/ASR/run_kd.sh ctc_kd --teacher exp/conformer_hybrid_s/averaged.pt   # ... from another teacher
#   bash egs/synth/ASR/run_kd.sh ctc_kd_blank            # ... with blank-frame masking
#   bash egs/synth/ASR/run_kd.sh self_kd --steps 200 --threads 2 -- data.max_duration=60
#
# Options (defaults in brackets):
#   --steps N          training steps of baseline and student (also the LR/alpha schedules' length) [600]
#   --threads T        torch threads per training / decoding process [1]
#   --teacher CKPT     teacher of ctc_kd*: a checkpoint or a bundle dir [pretrained/zipformer_transducer_s]
#   --layer K          the sub-model / k-layer depth (configs are written for K = 4) [4]
#   --avg A            checkpoints averaged before decoding [3]
#   --stage N / --stop-stage M   [1 / 5]
#   --results FILE     markdown log to append to [../../../docs/RESULTS.md]
#   -- key=value ...   config overrides for both trainings
#
# Stages:
#   1  baseline: the K-layer model alone (conf/kd/ctc_l4.yaml) -> exp/kd/ctc_l4_s<steps> (skipped when done)
#   2  student: conf/kd/<method config> -> exp/kd/<method>_s<steps> (resumes when killed)
#   3  average the last A checkpoints of each; for self-KD also export the sub-model (layers 1..K)
#   4  decode the test split with CTC greedy (baseline, student, self-KD sub-model)
#   5  append one row per model to the results file (asr_kd.bin.kd_report)
set -euo pipefail

steps=600
threads=1
teacher=pretrained/zipformer_transducer_s
layer=4
avg=3
stage=1
stop_stage=5
results=../../../docs/RESULTS.md
overrides=()

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }
[ $# -ge 1 ] || { usage >&2; exit 1; }
case "$1" in -h|--help) usage; exit 0 ;; esac
readonly method="$1"; shift  # readonly: not an option
parse_options_rest=overrides  # -- key=value ...
source "$(dirname "${BASH_SOURCE[0]}")/local/parse_options.sh"  # --foo-bar V sets $foo_bar; -h / --help

case "$method" in
  self_kd) conf=conf/kd/self_kd_l7.yaml; label="self-KD" ;;
  self_kd_blank) conf=conf/kd/self_kd_blank_l7.yaml; label="self-KD + blank masking" ;;
  self_kd_late) conf=conf/kd/self_kd_late_l7.yaml; label="self-KD, alpha from 40 % to 70 %" ;;
  self_kd_late_blank) conf=conf/kd/self_kd_late_blank_l7.yaml; label="self-KD + blank masking, alpha from 40 % to 70 %" ;;
  ctc_inter) conf=conf/kd/ctc_inter_l7.yaml; label="CTC + interCTC (no KD)" ;;
  ctc_kd) conf=conf/kd/ctc_kd_l4.yaml; label="conventional frame KD" ;;
  ctc_kd_blank) conf=conf/kd/ctc_kd_blank_l4.yaml; label="conventional frame KD + blank masking" ;;
  *) echo "run_kd.sh: unknown method '$method' (self_kd, self_kd_blank, self_kd_late, self_kd_late_blank, ctc_kd, ctc_kd_blank)" >&2; exit 1 ;;
esac
[ "$layer" = 4 ] || echo "run_kd.sh: note: the configs in conf/kd are written for K = 4; pass the matching overrides" >&2

cd "$(dirname "${BASH_SOURCE[0]}")"
repo="$(cd ../../.. && pwd)"
if [ -x "$repo/.venv/bin/python" ]; then python="$repo/.venv/bin/python"; else python=python3; fi
export PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}"

base_dir=exp/kd/ctc_l${layer}_s${steps}
kd_dir=exp/kd/${method}_s${steps}
common=(--max-steps "$steps" --num-threads "$threads")
sched=("scheduler.total_steps=$steps")
log_tag=run_kd
source local/log.sh  # log, run_stage

train() {  # config exp_dir [extra overrides]: local/log.sh's train_to with this script's common arguments
  train_to "$steps" "$1" "$2" "${common[@]}" "${sched[@]}" "${@:3}" "${overrides[@]}"
}

if run_stage 1; then
  log "stage 1: baseline, the ${layer}-layer model alone -> $base_dir"
  train conf/kd/ctc_l4.yaml "$base_dir"
fi

if run_stage 2; then
  log "stage 2: $label -> $kd_dir"
  case "$method" in
    ctc_kd*) [ -f "$teacher" ] || [ -f "$teacher/model.pt" ] || { echo "run_kd.sh: teacher $teacher not found (--teacher: a checkpoint, or a bundle dir with model.pt; the committed one comes back with git checkout -- $teacher)" >&2; exit 1; }
             train "$conf" "$kd_dir" "kd.teacher.checkpoint=$teacher" ;;
    *) train "$conf" "$kd_dir" ;;
  esac
fi

if run_stage 3; then
  log "stage 3: average the last $avg checkpoints"
  for d in "$base_dir" "$kd_dir"; do
    "$python" -m asr_kd.bin.average --exp-dir "$d" --avg "$avg" --out "$d/averaged.pt"
  done
  case "$method" in
    self_kd*|ctc_inter) "$python" -m asr_kd.bin.export --checkpoint "$kd_dir/averaged.pt" --sub-model-layer "$layer" \
                --out "$kd_dir/sub${layer}.pt" ;;
  esac
fi

if run_stage 4; then
  log "stage 4: decode (CTC greedy, test)"
  dec=(--method ctc-greedy --split test --num-threads "$threads")
  [ -f "$base_dir/decode/results.jsonl" ] || \
    "$python" -m asr_kd.bin.decode --exp-dir "$base_dir" --checkpoint "$base_dir/averaged.pt" --res-dir decode "${dec[@]}"
  "$python" -m asr_kd.bin.decode --exp-dir "$kd_dir" --checkpoint "$kd_dir/averaged.pt" --res-dir decode "${dec[@]}"
  case "$method" in
    self_kd*|ctc_inter) "$python" -m asr_kd.bin.decode --exp-dir "$kd_dir" --checkpoint "$kd_dir/sub${layer}.pt" \
                --res-dir decode_sub "${dec[@]}" ;;
  esac
fi

if run_stage 5; then
  log "stage 5: append to $results"
  entries=(--entry "${layer}-layer model alone=$base_dir/decode")
  case "$method" in
    self_kd*|ctc_inter) entries+=(--entry "$label, full 7-layer model=$kd_dir/decode"
                        --entry "$label, sub-model (layers 1-$layer)=$kd_dir/decode_sub") ;;
    *) entries+=(--entry "$label, ${layer}-layer student=$kd_dir/decode") ;;
  esac
  "$python" -m asr_kd.bin.kd_report --out "$results" --experiment "$method" --steps "$steps" \
    --baseline "${layer}-layer model alone" "${entries[@]}"
fi
log "done"
