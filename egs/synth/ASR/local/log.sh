# Logging helpers of the recipe scripts (sourced, not run): `source local/log.sh` after setting log_tag.
#   log MSG...                      [<log_tag> HH:MM:SS +<seconds since sourcing>s] MSG
#   run_stage N                     whether stage N is inside the caller's $stage .. $stop_stage
#   timed N WHAT CMD...             log "stage N: WHAT", run CMD, log "stage N done in Ss"
#   interactive                     true on a terminal, false under CI=true or when stdout is not a tty
#   stage_plan EST...               the estimated seconds of each stage of a script (for the ETA)
#   stage_begin I TITLE             stage I of the plan starts: on a terminal a header with the ETA of the
#                                   whole script, else one plain log line
#   stage_end                       the current stage is done (its time corrects the ETA of the rest)
#   train_to STEPS CONF DIR ARGS... asr_kd.bin.train --config CONF --exp-dir DIR ARGS..., unless DIR already
#                                   holds checkpoint-STEPS.pt (a finished row of a runner is not retrained;
#                                   an unfinished one resumes); uses $python (default python3)
# The ETA is the sum of the remaining stages' estimates, scaled by how long the stages that ran took against
# theirs (stages done in under a tenth of their estimate, e.g. skipped on a rerun, do not count).

t_start=$(date +%s)
run_stage() { [ "$stage" -le "$1" ] && [ "$stop_stage" -ge "$1" ]; }
log() { echo "[${log_tag:-run} $(date '+%H:%M:%S') +$(( $(date +%s) - t_start ))s] $*"; }
timed() {  # timed <stage> <description> <command...>
  local n="$1" what="$2" t0; shift 2
  t0=$(date +%s)
  log "stage $n: $what"
  "$@"
  log "stage $n done in $(( $(date +%s) - t0 ))s"
}
train_to() {  # train_to <steps> <config> <exp_dir> [train args...]
  local steps="$1" cfg="$2" dir="$3"; shift 3
  if [ -f "$dir/checkpoint-$steps.pt" ]; then log "$dir: already trained to step $steps"; return; fi
  "${python:-python3}" -m asr_kd.bin.train --config "$cfg" --exp-dir "$dir" "$@"
}
interactive() { [ -t 1 ] && [ "${CI:-}" != true ]; }

_stage_est=()
_stage_cur=0
_stage_t0=0
_stage_done_est=0
_stage_done_real=0
stage_plan() { _stage_est=("$@"); }
stage_eta() {  # seconds left for stages I.. (scaled by the measured speed)
  local i="$1" left=0 j
  for (( j = i; j <= ${#_stage_est[@]}; j++ )); do left=$(( left + _stage_est[j - 1] )); done
  if [ "$_stage_done_est" -ge 60 ]; then left=$(( left * _stage_done_real / _stage_done_est )); fi
  echo "$left"
}
stage_begin() {
  local i="$1" title="$2" n="${#_stage_est[@]}" left left_s
  _stage_cur="$i"
  _stage_t0=$(date +%s)
  if interactive; then
    left=$(stage_eta "$i")
    if [ "$left" -ge 60 ]; then left_s="about $(( (left + 30) / 60 )) min left"; else left_s="under a minute left"; fi
    printf '\n\033[1m== [%s/%s] %s\033[0m  (%s, done ~%s; %ds so far)\n' "$i" "$n" "$title" "$left_s" \
      "$(date -d "@$(( $(date +%s) + left ))" '+%H:%M' 2>/dev/null || echo '?')" $(( $(date +%s) - t_start ))
  else
    log "stage $i/$n: $title"
  fi
}
stage_end() {
  local real=$(( $(date +%s) - _stage_t0 )) est="${_stage_est[_stage_cur - 1]:-0}"
  if [ "$est" -gt 0 ] && [ $(( real * 10 )) -ge "$est" ]; then
    _stage_done_est=$(( _stage_done_est + est ))
    _stage_done_real=$(( _stage_done_real + real ))
  fi
  log "stage $_stage_cur/${#_stage_est[@]} done in ${real}s"
}
