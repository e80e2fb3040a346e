#!/usr/bin/env bash
# Train, average and decode one model on the synthetic corpus.
#
# Usage (from anywhere; the script cd's to egs/synth/ASR):
#   bash egs/synth/ASR/run.sh --config conf/conformer_ctc_xs.yaml --max-minutes 5         # CPU demo (tiny corpus)
#   bash egs/synth/ASR/run.sh --config conf/conformer_ctc_s.yaml --size default --max-minutes 60
#   bash egs/synth/ASR/run.sh --config conf/conformer_ctc_s.yaml --nproc 2                # DDP via torchrun
#   bash egs/synth/ASR/run.sh --stage 2 --stop-stage 3 --exp-dir exp/conformer_ctc_xs     # re-average and decode
#   bash egs/synth/ASR/run.sh --config conf/conformer_ctc_xs.yaml -- optim.lr=1.5e-3       # config overrides
#
# Options (defaults in brackets):
#   --stage N / --stop-stage M   run stages N..M [1 / 3]
#   --config FILE                training config, relative to egs/synth/ASR [conf/conformer_ctc_xs.yaml]
#   --exp-dir DIR                experiment directory [exp/<config name>]
#   --size tiny|small|default    corpus size for stage 0 [tiny]
#   --max-minutes M              wall-clock budget of the training loop ["" = config's]
#   --max-steps N                step limit ["" = config's]
#   --nproc P                    processes (torchrun --nproc_per_node P when P > 1) [1]
#   --avg K                      average the K newest checkpoint-*.pt in stage 2 [3]
#   --method NAME                decoding method for stage 3 [ctc-greedy]
#   --decode-splits "S1 S2"      splits to decode [test]
#   -- key=value ...             everything after -- goes to the training config as overrides
#
# Stages:
#   0  prepare the corpus: bash prepare.sh --size $size (skipped stage by stage when done)
#   1  train: python -m asr_kd.bin.train (resumes from the latest checkpoint in --exp-dir)
#   2  average: python -m asr_kd.bin.average --avg K -> $exp_dir/averaged.pt
#   3  decode: python -m asr_kd.bin.decode --exp-dir --checkpoint --method --split (WER to errs-*.txt)
set -euo pipefail

stage=1
stop_stage=3
config=conf/conformer_ctc_xs.yaml
exp_dir=
size=tiny
max_minutes=
max_steps=
nproc=1
avg=3
method=ctc-greedy
decode_splits=test
overrides=()

parse_options_rest=overrides  # -- key=value ...
source "$(dirname "${BASH_SOURCE[0]}")/local/parse_options.sh"  # --foo-bar V sets $foo_bar; -h / --help

cd "$(dirname "${BASH_SOURCE[0]}")"
repo="$(cd ../../.. && pwd)"
if [ -x "$repo/.venv/bin/python" ]; then python="$repo/.venv/bin/python"; else python=python3; fi
export PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}"
[ -n "$exp_dir" ] || exp_dir="exp/$(basename "$config" .yaml)"

log_tag=run
source local/log.sh  # log, run_stage

if run_stage 0; then
  log "stage 0: prepare the corpus (--size $size)"
  bash prepare.sh --size "$size"
fi

if run_stage 1; then
  log "stage 1: train $config -> $exp_dir"
  args=(--config "$config" --exp-dir "$exp_dir")
  [ -z "$max_minutes" ] || args+=(--max-minutes "$max_minutes")
  [ -z "$max_steps" ] || args+=(--max-steps "$max_steps")
  if [ "$nproc" -gt 1 ]; then
    launcher=("$python" -m torch.distributed.run --standalone --nproc_per_node "$nproc")
  else
    launcher=("$python")
  fi
  "${launcher[@]}" -m asr_kd.bin.train "${args[@]}" ${overrides[@]+"${overrides[@]}"}
fi

if run_stage 2; then
  n=$(find "$exp_dir" -maxdepth 1 -name 'checkpoint-*.pt' | wc -l)
  k=$(( n < avg ? n : avg ))
  if [ "$k" -lt 1 ]; then echo "run.sh: no checkpoint-*.pt in $exp_dir" >&2; exit 1; fi
  log "stage 2: average the $k newest checkpoints -> $exp_dir/averaged.pt"
  "$python" -m asr_kd.bin.average --exp-dir "$exp_dir" --avg "$k" --out "$exp_dir/averaged.pt"
fi

if run_stage 3; then
  for split in $decode_splits; do
    log "stage 3: decode $split with $method"
    # Data settings (manifest dir, prefix, lang dir, fbank) come from the config stored in the checkpoint.
    "$python" -m asr_kd.bin.decode --exp-dir "$exp_dir" --checkpoint "$exp_dir/averaged.pt" \
      --method "$method" --split "$split"
  done
fi

log "done"
