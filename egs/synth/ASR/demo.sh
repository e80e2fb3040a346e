#!/usr/bin/env bash
# README's main command (`make demo`): distil the committed pretrained teacher into a small student and show
# the gain, on CPU, in about 15 minutes on 2 cores.
#   1. check the teacher bundle pretrained/zipformer_transducer_s (Zipformer "s" transducer + CTC head, BPE 128)
#   2. prepare.sh --size small (3000/300/300 utterances) with the teacher's BPE model, pre-computed fbank
#   3. decode the test set with the teacher (modified beam search) and print its WER
#   4. store the teacher's top-8 CTC posteriors with the train and dev cuts (asr_kd.bin.dump_teacher, one pass)
#   5. train the student alone: Zipformer "xs" + CTC from scratch (conf/demo/zipformer_ctc_xs.yaml)
#   6. train the student + KD: the same model, data, seed and steps, plus frame-level KL to the teacher's
#      CTC posteriors (conf/demo/zipformer_ctc_xs_kd.yaml)
#   7. average each student's last checkpoints (model_avg) and decode the test set (CTC greedy)
#   8. one table (teacher, student alone, student + KD: WER, CER, parameters, RTF, training time) saved as
#      <exp>/demo_results.{md,json}; the students' validation loss and WER against steps in <exp>/curves.png
#
# Usage:
#   bash egs/synth/ASR/demo.sh                    # (make demo) 1100 steps per student, ~7 min each on 2 idle cores
#   DEMO_MINUTES=14 bash egs/synth/ASR/demo.sh    # 2250 steps per student; re-running the same command resumes
#   DEMO_QUICK=1 bash egs/synth/ASR/demo.sh       # the few-step check (tiny corpus, 4 steps): tests/egs
#
# Environment (defaults in brackets):
#   DEMO_MINUTES M     training minutes per student at ~160 steps a minute; sets the step count of both [7]
#   DEMO_STEPS N       the step count of both students directly (overrides DEMO_MINUTES) []
#   DEMO_THREADS T     torch threads of every training / decoding process [2]
#   DEMO_QUICK 1       tiny corpus, 4 steps, validation every 2 steps: the pipeline end to end in about a minute
#   DEMO_DATA_DIR D    the corpus [data_small; data_tiny with DEMO_QUICK]
#   DEMO_EXP_DIR D     the experiments, the table and the plot [exp/demo; exp/demo_quick with DEMO_QUICK]
#   DEMO_TEACHER B     the teacher bundle (its BPE model becomes the corpus's) [pretrained/zipformer_transducer_s]
#   DEMO_OVERRIDES     config overrides for both students, e.g. "model.encoder.preset=s" (with a new DEMO_EXP_DIR) []
#   CI=true            plain log lines (also when stdout is not a terminal); on a terminal: stage headers + ETA
# Paths are relative to egs/synth/ASR. A second demo in the same tree stops at once (a lock on
# egs/synth/ASR/.demo.lock); the disk is checked before synthesis (prepare.sh stage 2).
set -euo pipefail
{  # read to the closing brace before running: editing this file during a demo cannot change that demo
source "$(dirname "${BASH_SOURCE[0]}")/local/parse_options.sh"  # no options (the environment above); -h / --help
cd "$(dirname "${BASH_SOURCE[0]}")"
repo="$(cd ../../.. && pwd)"
if [ -x "$repo/.venv/bin/python" ]; then python="$repo/.venv/bin/python"; else python=python3; fi
export PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}"
log_tag=demo
source local/log.sh  # log, interactive, stage_plan / stage_begin / stage_end

lock=.demo.lock
if command -v flock > /dev/null; then
  exec 9<> "$lock"
  if ! flock -n 9; then
    echo "demo.sh: another demo is already running in this tree (pid $(cat "$lock" 2> /dev/null || echo '?'), lock" \
      "egs/synth/ASR/$lock); wait for it to finish, or stop it, then run make demo again (it resumes)" >&2
    exit 1
  fi
  echo $$ > "$lock"
else
  echo "demo.sh: flock not found: running without the lock against a second demo in this tree" >&2
fi

teacher="${DEMO_TEACHER:-pretrained/zipformer_transducer_s}"
threads="${DEMO_THREADS:-2}"
quick="${DEMO_QUICK:-0}"
if [ "$quick" = 1 ]; then
  size=tiny
  data="${DEMO_DATA_DIR:-data_tiny}"
  exp="${DEMO_EXP_DIR:-exp/demo_quick}"
  steps="${DEMO_STEPS:-4}"
  extra=(training.valid_interval=2 training.ckpt_interval=2 training.average_period=1 training.log_interval=1
         data.max_valid_cuts=10 scheduler.warmup_batches=2)
else
  size=small
  data="${DEMO_DATA_DIR:-data_small}"
  exp="${DEMO_EXP_DIR:-exp/demo}"
  minutes="${DEMO_MINUTES:-7}"
  steps="${DEMO_STEPS:-$(awk -v m="$minutes" 'BEGIN { s = int(m * 160 / 50 + 0.5) * 50; print (s < 100 ? 100 : s) }')}"
  extra=()
fi
read -r -a user_overrides <<< "${DEMO_OVERRIDES:-}"
extra+=(${user_overrides[@]+"${user_overrides[@]}"})
case "$steps" in ''|*[!0-9]*) echo "demo.sh: DEMO_STEPS must be a positive integer, got '$steps'" >&2; exit 1 ;; esac
lang="$data/lang_bpe_128"
kd_data="$data/kd_$(basename "$teacher")"
student="$exp/student_s$steps"
student_kd="$exp/student_kd_s$steps"
common=(--max-steps "$steps" --num-threads "$threads")
sched=("scheduler.lr_batches=$(( steps / 2 > 1 ? steps / 2 : 1 ))")
extra+=(training.valid_decode=ctc-greedy)  # validation WER at every validation (for the plot)
train_s=$(( steps * 60 / 160 ))  # ~160 steps a minute on 2 idle cores (600 steps: 227 s, fresh clone)
# estimated seconds per stage on 2 idle cores (the ETA; corrected by the stages' measured times)
if [ "$quick" = 1 ]; then stage_plan 5 45 5 10 15 15 10 5; else
  stage_plan 5 330 20 40 $(( train_s + 20 )) $(( train_s + 20 )) 30 10; fi
mkdir -p "$exp"
log "teacher $teacher, corpus $data ($size), students: $steps steps each, $threads threads -> $exp"

stage_begin 1 "check the pretrained teacher $teacher"
"$python" local/demo.py check-teacher "$teacher"
stage_end

stage_begin 2 "prepare the $size corpus in $data (the teacher's BPE model, fbank)"
bash prepare.sh --size "$size" --data-dir "$data" --vocab-size 128 --bpe-model "$teacher/bpe.model" \
  --precompute-fbank true --nj 2
stage_end

stage_begin 3 "decode the test set with the teacher (modified beam search)"
if grep -qs '"method": "modified-beam' "$exp/teacher/results.jsonl"; then
  log "$exp/teacher: decoded already"
else
  "$python" -m asr_kd.bin.decode --exp-dir "$teacher" --method modified-beam --split test \
    --manifest-dir "$data/fbank" --lang-dir "$lang" --res-dir "$(cd "$exp" && pwd)/teacher" --num-threads "$threads"
fi
stage_end

stage_begin 4 "store the teacher's top-8 CTC posteriors with the train and dev cuts -> $kd_data"
if [ -f "$kd_data/.done_size-$size" ]; then
  log "$kd_data: dumped already"
else
  rm -f "$kd_data"/.done_*
  "$python" -m asr_kd.bin.dump_teacher --exp-dir "$teacher" --splits train dev --topk 8 \
    --manifest-dir "$data/fbank" --lang-dir "$lang" --out-dir "$kd_data" --num-threads "$threads"
  touch "$kd_data/.done_size-$size"
fi
stage_end

train() {  # config exp_dir manifest_dir
  if [ -f "$2/checkpoint-$steps.pt" ]; then log "$2: trained to step $steps already"; return; fi
  "$python" -m asr_kd.bin.train --config "$1" --exp-dir "$2" "${common[@]}" "${sched[@]}" \
    "data.manifest_dir=$3" "data.lang_dir=$lang" ${extra[@]+"${extra[@]}"}
}
stage_begin 5 "train the student alone ($steps steps) -> $student"
train conf/demo/zipformer_ctc_xs.yaml "$student" "$data/fbank"
stage_end

stage_begin 6 "train the student + KD from the teacher ($steps steps) -> $student_kd"
train conf/demo/zipformer_ctc_xs_kd.yaml "$student_kd" "$kd_data"
stage_end

stage_begin 7 "average and decode both students (CTC greedy)"
for d in "$student" "$student_kd"; do
  if [ -f "$d/decode/results.jsonl" ] && [ "$d/decode/results.jsonl" -nt "$d/averaged.pt" ]; then
    log "$d: decoded already"; continue
  fi
  # model_avg between the newest checkpoint and the one 2 before it (the last third of the run), or what there is
  n=$(find "$d" -maxdepth 1 -name 'checkpoint-*.pt' | wc -l)
  if [ "$n" -ge 2 ]; then avg_args=(--avg $(( n > 2 ? 2 : 1 )) --use-averaged-model); else avg_args=(--avg 1); fi
  "$python" -m asr_kd.bin.average --exp-dir "$d" "${avg_args[@]}" --out "$d/averaged.pt"
  "$python" -m asr_kd.bin.decode --exp-dir "$d" --checkpoint "$d/averaged.pt" --method ctc-greedy --split test \
    --manifest-dir "$data/fbank" --lang-dir "$lang" --num-threads "$threads"
done
stage_end

stage_begin 8 "the results table and the plot"
"$python" local/demo.py table --out-dir "$exp" --split test --baseline "student alone" \
  --row "teacher=$exp/teacher:modified-beam:$teacher" \
  --row "student alone=$student/decode:ctc-greedy:$student" \
  --row "student + KD=$student_kd/decode:ctc-greedy:$student_kd" \
  --note "Test split of $data ($size corpus). Teacher: $teacher (Zipformer s pruned RNN-T + CTC head), modified beam search. Students: conf/demo/zipformer_ctc_xs{,_kd}.yaml${DEMO_OVERRIDES:+ + $DEMO_OVERRIDES}, $steps steps each, CTC greedy; + KD = CTC + 3 x frame-level KL (T = 2) to the teacher's top-8 CTC posteriors (offline). $threads threads; training time = wall clock of the training loop."
teacher_wer=$("$python" -c "import json, sys; print(json.load(open(sys.argv[1]))['rows'][0]['wer'])" "$exp/demo_results.json")
"$python" -m asr_kd.bin.plot curves --exp-dir "$student" --label "student" --exp-dir "$student_kd" \
  --label "student + KD" --hline "teacher (test set)=$teacher_wer" --x steps --loss-key ctc --out "$exp/curves.png"
plot="$exp/curves.png"
stage_end

where() { case "$1" in /*) echo "$1" ;; *) echo "egs/synth/ASR/$1" ;; esac; }  # from the repository root
echo
echo "demo: table          $(where "$exp")/demo_results.md (and .json)"
echo "demo: curves         $(where "$plot")"
echo "demo: recogs / errs  $(where "$exp")/{teacher,$(basename "$student")/decode,$(basename "$student_kd")/decode}/{recogs,errs}-test-*.txt"
echo "demo: tensorboard    .venv/bin/tensorboard --logdir $(where "$exp")"
log "done"
exit 0
}
