#!/usr/bin/env bash
# AR -> NAR knowledge transfer into Mask-CTC (Gong, Zhou, Qian, Interspeech 2022), issue 5's experiment:
# the NAR baseline, NAR + frame-level KD (stage 1) and NAR + frame- and sequence-level KD (stage 2,
# fine-tuned from the stage-1 student) of one student size, all with the same data, seed and step
# budget; decoded with Mask-CTC easy-first and Algorithm 1's beam search; the AR teacher decoded with
# the joint CTC/attention beam search; results appended to docs/RESULTS.md.
#
# Usage (from anywhere; needs prepare.sh --size default --precompute-fbank true and --vocab-size 128):
#   bash egs/synth/ASR/run_ar_nar.sh m                 # the student of the teacher's size (4.7M)
#   bash egs/synth/ASR/run_ar_nar.sh xs                # the ~9x smaller student (0.5M)
#   bash egs/synth/ASR/run_ar_nar.sh m --steps 300 --stage2-from 200 -- data.max_duration=40
#
# Options (defaults in brackets):
#   --steps N          training steps of the baseline and of the stage-1 student; stage 2 starts from the
#                      stage-1 checkpoint at --stage2-from and runs N - stage2-from steps, so every
#                      student sees N steps in all [900]
#   --stage2-from S    [600]
#   --teacher CKPT     the AR teacher (joint CTC/attention model) [exp/conformer_hybrid_s/averaged.pt];
#                      stage 0 trains conf/ar_nar/ar_teacher_m.yaml into exp/ar_nar/ar_teacher_m when
#                      CKPT is exp/ar_nar/ar_teacher_m/averaged.pt and does not exist yet
#   --threads T        torch threads per training / decoding process [1]
#   --avg A            checkpoints averaged before decoding [3]
#   --stage N / --stop-stage M   [0 / 6]
#   --results FILE     markdown log to append to [../../../docs/RESULTS.md]
#   -- key=value ...   config overrides for every student training
#
# Stages:
#   0  (only for the dedicated teacher) train conf/ar_nar/ar_teacher_m.yaml
#   1  NAR baseline        conf/ar_nar/nar_<size>.yaml      -> exp/ar_nar/nar_<size>_s<N>
#   2  NAR + frame KD      conf/ar_nar/nar_<size>_fkd.yaml  -> exp/ar_nar/nar_<size>_fkd_s<N>
#   3  NAR + frame+seq KD  conf/ar_nar/nar_<size>_fskd.yaml -> exp/ar_nar/nar_<size>_fskd_s<N>
#                          (init_from = stage 2's checkpoint-<S>.pt; teacher 10-best by its joint beam)
#   4  average the last A checkpoints of each student
#   5  decode test: the teacher with attention-beam (beam 10, CTC weight 0.3; once per teacher), every
#      student with ctc-greedy (the encoder alone), mask-ctc (p_thr 0.99, K 2) and mask-ctc-beam (B 10),
#      the baseline also with B 1 and 5
#   6  append the rows (WER, CER, ins+del, RTF) to the results file (asr_kd.bin.kd_report)
set -euo pipefail

steps=900
stage2_from=600
teacher=exp/conformer_hybrid_s/averaged.pt
threads=1
avg=3
stage=0
stop_stage=6
results=../../../docs/RESULTS.md
overrides=()

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }
[ $# -ge 1 ] || { usage >&2; exit 1; }
case "$1" in -h|--help) usage; exit 0 ;; esac
readonly size="$1"; shift  # readonly: not an option
parse_options_rest=overrides  # -- key=value ...
source "$(dirname "${BASH_SOURCE[0]}")/local/parse_options.sh"  # --foo-bar V sets $foo_bar; -h / --help
case "$size" in m|xs) ;; *) echo "run_ar_nar.sh: size must be m or xs, not '$size'" >&2; exit 1 ;; esac
[ "$stage2_from" -gt 0 ] && [ "$stage2_from" -lt "$steps" ] || { echo "run_ar_nar.sh: need 0 < --stage2-from < --steps" >&2; exit 1; }

cd "$(dirname "${BASH_SOURCE[0]}")"
repo="$(cd ../../.. && pwd)"
if [ -x "$repo/.venv/bin/python" ]; then python="$repo/.venv/bin/python"; else python=python3; fi
export PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}"

base_dir=exp/ar_nar/nar_${size}_s${steps}
fkd_dir=exp/ar_nar/nar_${size}_fkd_s${steps}
fskd_dir=exp/ar_nar/nar_${size}_fskd_s${steps}
teacher_dir="$(dirname "$teacher")"
log_tag=run_ar_nar
source local/log.sh  # log, run_stage

train() {  # config exp_dir max_steps [extra overrides]
  local cfg="$1" dir="$2" n="$3"; shift 3
  if [ -f "$dir/checkpoint-$n.pt" ]; then log "$dir: already trained to step $n"; return; fi
  "$python" -m asr_kd.bin.train --config "$cfg" --exp-dir "$dir" --max-steps "$n" --num-threads "$threads" \
    "scheduler.total_steps=$n" training.ckpt_interval=100 "$@" "${overrides[@]}"
}

if run_stage 0 && [ "$teacher" = exp/ar_nar/ar_teacher_m/averaged.pt ] && [ ! -f "$teacher" ]; then
  log "stage 0: the dedicated AR teacher -> exp/ar_nar/ar_teacher_m"
  "$python" -m asr_kd.bin.train --config conf/ar_nar/ar_teacher_m.yaml --exp-dir exp/ar_nar/ar_teacher_m \
    --num-threads "$threads" --max-minutes 60
  "$python" -m asr_kd.bin.average --exp-dir exp/ar_nar/ar_teacher_m --avg "$avg" --out "$teacher"
fi
[ -f "$teacher" ] || { echo "run_ar_nar.sh: teacher checkpoint $teacher not found (--teacher)" >&2; exit 1; }

if run_stage 1; then
  log "stage 1: NAR baseline -> $base_dir"
  train "conf/ar_nar/nar_${size}.yaml" "$base_dir" "$steps"
fi
if run_stage 2; then
  log "stage 2: NAR + frame-level KD -> $fkd_dir"
  train "conf/ar_nar/nar_${size}_fkd.yaml" "$fkd_dir" "$steps" "kd.teacher.checkpoint=$teacher"
fi
if run_stage 3; then
  log "stage 3: NAR + frame- and sequence-level KD, from $fkd_dir/checkpoint-$stage2_from.pt -> $fskd_dir"
  [ -f "$fkd_dir/checkpoint-$stage2_from.pt" ] || { echo "run_ar_nar.sh: $fkd_dir/checkpoint-$stage2_from.pt not found" \
    "(the stage-1 run must keep a checkpoint at --stage2-from: training.ckpt_interval)" >&2; exit 1; }
  train "conf/ar_nar/nar_${size}_fskd.yaml" "$fskd_dir" "$(( steps - stage2_from ))" "kd.teacher.checkpoint=$teacher" \
    "training.init_from=$fkd_dir/checkpoint-$stage2_from.pt"
fi
if run_stage 4; then
  log "stage 4: average the last $avg checkpoints"
  for d in "$base_dir" "$fkd_dir" "$fskd_dir"; do
    "$python" -m asr_kd.bin.average --exp-dir "$d" --avg "$avg" --out "$d/averaged.pt"
  done
fi

decoded() {  # res_dir method -> 0 when results.jsonl already has the method on test
  [ -f "$1/results.jsonl" ] && grep -q "\"method\": \"$2\"" "$1/results.jsonl"
}
if run_stage 5; then
  log "stage 5: decode test (1 CPU thread per process gives the RTFs of the paper's table)"
  common=(--split test --num-threads "$threads")
  tdec="$teacher_dir/decode_ar_nar"
  decoded "$tdec" attention-beam || "$python" -m asr_kd.bin.decode --exp-dir "$teacher_dir" --checkpoint "$teacher" \
    --res-dir decode_ar_nar --method attention-beam --beam 10 --ctc-weight 0.3 "${common[@]}"
  for d in "$base_dir" "$fkd_dir" "$fskd_dir"; do
    "$python" -m asr_kd.bin.decode --exp-dir "$d" --checkpoint "$d/averaged.pt" --res-dir decode \
      --method ctc-greedy --method mask-ctc --p-thr 0.99 --iterations 2 "${common[@]}"
    "$python" -m asr_kd.bin.decode --exp-dir "$d" --checkpoint "$d/averaged.pt" --res-dir decode \
      --method mask-ctc-beam --beam 10 --p-thr 0.99 --iterations 2 "${common[@]}"
  done
  for b in 1 5; do
    "$python" -m asr_kd.bin.decode --exp-dir "$base_dir" --checkpoint "$base_dir/averaged.pt" --res-dir "decode_b$b" \
      --method mask-ctc-beam --beam "$b" --p-thr 0.99 --iterations 2 "${common[@]}"
  done
fi
if run_stage 6; then
  log "stage 6: append to $results"
  for m in ctc-greedy mask-ctc mask-ctc-beam; do
    "$python" -m asr_kd.bin.kd_report --out "$results" --experiment "ar_nar_${size} ($m)" --steps "$steps" \
      --method "$m" --baseline "NAR-${size} baseline" \
      --entry "NAR-${size} baseline=$base_dir/decode" \
      --entry "NAR-${size} + frame KD=$fkd_dir/decode" \
      --entry "NAR-${size} + frame+seq KD=$fskd_dir/decode"
  done
  [ "$size" = m ] && "$python" -m asr_kd.bin.kd_report --out "$results" --experiment "ar_nar teacher" \
    --steps "$steps" --method attention-beam --entry "AR teacher (joint CTC/attention beam 10)=$teacher_dir/decode_ar_nar"
fi
log "done"
