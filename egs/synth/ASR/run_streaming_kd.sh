#!/usr/bin/env bash
# Streaming KD experiment runner (issue 16, arXiv 2308.16415): a full-context Zipformer transducer teacher
# distilled into a causal, chunked Zipformer student of the same depth, through auxiliary non-streaming layers
# (asr_kd/kd/streaming_kd.py), against the student alone and token-probability KD (asr_kd/kd/transducer_kd.py).
#
# Usage (from anywhere; the script cd's to egs/synth/ASR; needs prepare.sh --size default --precompute-fbank true
# and the BPE-128 lang dir, the teacher's vocabulary):
#   bash egs/synth/ASR/run_streaming_kd.sh                                   # every stage, the six main rows
#   bash egs/synth/ASR/run_streaming_kd.sh --steps 1000 --threads 2          # a shorter budget per row
#   bash egs/synth/ASR/run_streaming_kd.sh --minutes 40 --steps 100000       # a wall-clock budget per row
#   bash egs/synth/ASR/run_streaming_kd.sh --rows "apc_n1 apc_n4"            # the APC shift sweep (N = 1, 4)
#   bash egs/synth/ASR/run_streaming_kd.sh --dynamic true --tag dyn          # dynamic chunk training, every row
#   bash egs/synth/ASR/run_streaming_kd.sh --stage 3 --stop-stage 4          # decode and report only
#
# Options (defaults in brackets):
#   --rows "..."       rows, from: no_kd token_kd aux_feat aux_feat_rel aux_apc direct apc_n1 apc_n4
#                      [no_kd token_kd aux_feat aux_feat_rel aux_apc direct]
#   --steps N          training steps per row (train_to skips a row that has checkpoint-N.pt) [3000]
#   --minutes M        also stop each row after M minutes (--max-minutes; a row stopped by time is not
#                      "finished" and resumes on the next run of stage 1) [no limit]
#   --threads T        torch threads per training / decoding process [1]
#   --teacher DIR      the full-context teacher: a checkpoint or a bundle [pretrained/zipformer_transducer_s]
#   --chunk-ms C       chunk of training (fixed) and of streaming decoding, ms [160]
#   --left-ms L        left context, ms (-1: all) [640]
#   --dynamic B        true: dynamic chunk training for every row (conf/streaming/student_s_dynamic.yaml's
#                      training.chunk), decoded at --chunk-ms / --left-ms [false]
#   --tag S            suffix of the experiment dirs (e.g. for --dynamic true) []
#   --avg A            checkpoints averaged before decoding [3]
#   --stage N / --stop-stage M   [0 / 4]
#   --results FILE     markdown log to append to [../../../docs/RESULTS.md]
#   -- key=value ...   config overrides for every training
#
# Stages:
#   0  start-up checks: the chunk / left context in the encoder's units (asr_kd.kd.streaming_kd.chunk_from_ms
#      refuses a chunk that is not a whole number of 40 ms frames or not a multiple of the Zipformer's 4, and a
#      left context that is not a whole number of chunks); the teacher exists
#   1  train each row -> exp/streaming/<row>_s<steps><tag> (conf/streaming/<config>, see conf_of)
#   2  average the last A checkpoints of each row (the auxiliary branches are dropped)
#   3  decode the test split: full context (transducer-greedy) and true streaming (streaming-greedy,
#      streaming-modified-beam, chunk by chunk with caches, per-chunk latency and RTF); the teacher, full context
#   4  append the tables (streaming greedy, streaming beam, full context; WER, CER, RTF) to the results file
#
# Time per row (the 2-core box, --threads 2): the student alone trains at about 0.6 s/step (the 60-minute
# Zipformer transducer recipe did 5,959 steps). Measured on one step of 12 x 6.5 s utterances (one thread, the box
# busy): no_kd 1.6 s, token_kd 1.9 s (1.2x: the teacher's forward and lattice), direct 2.0 s (1.25x), the aux-branch
# rows 2.9 s (1.8x: four Transformer layers and LSTMs on 25 Hz frames). So 3000 steps take about 30 min (no_kd),
# 36-38 min (token_kd, direct) and 55 min (aux rows); the six rows about 4.5 h, plus about 2 min of decoding per
# row and method on the test split. With --threads 1 on a box shared with another run, double it.
set -euo pipefail

rows="no_kd token_kd aux_feat aux_feat_rel aux_apc direct"
steps=3000
minutes=
threads=1
teacher=pretrained/zipformer_transducer_s
chunk_ms=160
left_ms=640
dynamic=false
tag=
avg=3
stage=0
stop_stage=4
results=../../../docs/RESULTS.md
overrides=()

parse_options_rest=overrides  # -- key=value ...
source "$(dirname "${BASH_SOURCE[0]}")/local/parse_options.sh"  # --foo-bar V sets $foo_bar; -h / --help

conf_of() {
  case "$1" in
    no_kd) echo conf/streaming/student_s.yaml ;;
    token_kd) echo conf/streaming/token_kd.yaml ;;
    aux_feat) echo conf/streaming/aux_feat.yaml ;;
    aux_feat_rel) echo conf/streaming/aux_feat_rel.yaml ;;
    aux_apc) echo conf/streaming/aux_feat_rel_apc_n2.yaml ;;
    apc_n1) echo conf/streaming/aux_feat_rel_apc_n1.yaml ;;
    apc_n4) echo conf/streaming/aux_feat_rel_apc_n4.yaml ;;
    direct) echo conf/streaming/direct.yaml ;;
    *) echo "run_streaming_kd.sh: unknown row '$1' (no_kd token_kd aux_feat aux_feat_rel aux_apc direct apc_n1 apc_n4)" >&2
       exit 1 ;;
  esac
}
label_of() {
  case "$1" in
    no_kd) echo "streaming student, no KD" ;;
    token_kd) echo "+ token KD (joiner KL, teacher alignment)" ;;
    aux_feat) echo "+ aux-branch feature KD (L1 + cos)" ;;
    aux_feat_rel) echo "+ aux-branch feature + attention relation" ;;
    aux_apc) echo "+ aux-branch feature + relation + APC (N=2)" ;;
    apc_n1) echo "+ aux-branch feature + relation + APC (N=1)" ;;
    apc_n4) echo "+ aux-branch feature + relation + APC (N=4)" ;;
    direct) echo "direct layer KD (feature + relation + APC, no branch)" ;;
  esac
}
for r in $rows; do conf_of "$r" >/dev/null; done
case "$dynamic" in true|false) ;; *) echo "run_streaming_kd.sh: --dynamic true|false, not $dynamic" >&2; exit 1 ;; esac

cd "$(dirname "${BASH_SOURCE[0]}")"
repo="$(cd ../../.. && pwd)"
if [ -x "$repo/.venv/bin/python" ]; then python="$repo/.venv/bin/python"; else python=python3; fi
export PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}"
log_tag=run_streaming_kd
source local/log.sh  # log, run_stage, train_to

dir_of() { echo "exp/streaming/${1}_s${steps}${tag}"; }
teacher_dir=exp/streaming/teacher

# the chunk in the encoder's units (output frames; chunks), refused at start-up when the subsampling cannot use it
units=$("$python" - "$chunk_ms" "$left_ms" <<'EOF'
import sys
from asr_kd.kd.streaming_kd import chunk_from_ms
from asr_kd.models.asr_model import build_encoder
from asr_kd.training.config import load_config

enc = build_encoder({**load_config("conf/streaming/student_s.yaml")["model"]["encoder"], "input_dim": 80})
try:
    print(*chunk_from_ms(enc, float(sys.argv[1]), float(sys.argv[2])))
except ValueError as e:
    sys.exit(f"run_streaming_kd.sh: --chunk-ms {sys.argv[1]} / --left-ms {sys.argv[2]}: {e}")
EOF
)
read -r chunk left <<< "$units"

if run_stage 0; then
  log "stage 0: chunk ${chunk_ms} ms = $chunk frames, left context ${left_ms} ms = $left chunks; teacher $teacher"
  [ -e "$teacher" ] || { echo "run_streaming_kd.sh: no teacher at $teacher" >&2; exit 1; }
fi

if [ "$dynamic" = true ]; then
  chunk_cfg="training.chunk={dynamic: true, max_chunk: 16, full_context_prob: 0.25, max_left_chunks: 8, unlimited_left_prob: 0.25}"
else
  chunk_cfg="training.chunk={chunk_size: $chunk, left_context: $left}"
fi
common=(--max-steps "$steps" --num-threads "$threads" ${minutes:+--max-minutes "$minutes"})

if run_stage 1; then
  for r in $rows; do
    d=$(dir_of "$r")
    log "stage 1: $(label_of "$r") -> $d"
    extra=("$chunk_cfg")
    [ "$r" = no_kd ] || extra+=("kd.teacher={type: asr, checkpoint: $teacher}")
    train_to "$steps" "$(conf_of "$r")" "$d" "${common[@]}" "${extra[@]}" "${overrides[@]}"
  done
fi

if run_stage 2; then
  log "stage 2: average the last $avg checkpoints"
  for r in $rows; do
    d=$(dir_of "$r")
    "$python" -m asr_kd.bin.average --exp-dir "$d" --avg "$avg" --out "$d/averaged.pt"
  done
fi

if run_stage 3; then
  log "stage 3: decode test (full context; streaming at $chunk frames, $left chunks of left context)"
  dec=(--split test --num-threads "$threads")
  [ -f "$teacher_dir/decode/results.jsonl" ] || \
    "$python" -m asr_kd.bin.decode --exp-dir "$teacher" --res-dir "$PWD/$teacher_dir/decode" \
      --method transducer-greedy --method modified-beam "${dec[@]}"
  for r in $rows; do
    d=$(dir_of "$r")
    "$python" -m asr_kd.bin.decode --exp-dir "$d" --checkpoint "$d/averaged.pt" --res-dir decode_full \
      --method transducer-greedy "${dec[@]}"
    "$python" -m asr_kd.bin.decode --exp-dir "$d" --checkpoint "$d/averaged.pt" --res-dir decode_stream \
      --method streaming-greedy --method streaming-modified-beam --chunk-size "$chunk" --left-context "$left" "${dec[@]}"
  done
fi

if run_stage 4; then
  log "stage 4: append to $results"
  base="$(label_of no_kd)"
  for m in streaming-greedy streaming-modified-beam transducer-greedy; do
    res=decode_stream
    [ "$m" = transducer-greedy ] && res=decode_full
    entries=()
    for r in $rows; do entries+=(--entry "$(label_of "$r")=$(dir_of "$r")/$res"); done
    bl=()
    case " $rows " in *" no_kd "*) bl=(--baseline "$base") ;; esac
    "$python" -m asr_kd.bin.kd_report --out "$results" --experiment "streaming_kd${tag:+_$tag} ($m)" --steps "$steps" \
      --method "$m" "${bl[@]}" "${entries[@]}"
  done
  "$python" -m asr_kd.bin.kd_report --out "$results" --experiment "streaming_kd upper line (full-context teacher)" \
    --steps 0 --method transducer-greedy --entry "full-context teacher ($teacher)=$teacher_dir/decode"
fi
log "done"
