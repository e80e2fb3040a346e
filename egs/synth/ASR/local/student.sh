# The student of the KD runners (run_inter_aed.sh, run_repr_kd.sh), sourced, not run: after parse_options.sh,
# with $student (--student), $steps (--steps) and $avg (--avg; empty: the student's default) set,
#   source "$(dirname "${BASH_SOURCE[0]}")/local/student.sh"
# Students (anything else: "<script>: unknown --student 'S' (conformer_l4, zipformer)" on stderr, exit 1):
#   conformer_l4   the rows' own configs (4-layer Conformer "s"), AdamW + cosine over --steps; averages the last
#                  --avg checkpoints' weights [--avg 3]
#   zipformer      + the overlay conf/students/zipformer_s.yaml (Zipformer "s", ScaledAdam + Eden + model_avg);
#                  exp dirs zf_<row>, labels "... (Zipformer s)"; the model_avg running averages over the last
#                  --avg checkpoint intervals, --use-averaged-model [--avg 5]
# Sets:
#   student_conf                    the config overlay of the student (empty: none)
#   student_args                    train options of the overlay: (--config $student_conf), or ()
#   tag                             prefix of the rows' exp dir names: "" or "zf_"
#   suffix                          appended to the rows' report labels: "" or " (Zipformer s)"
#   sched                           schedule overrides of every training: (scheduler.total_steps=$steps), or ()
#   avg                             --avg, or the student's default when empty
#   avg_args                        extra options of asr_kd.bin.average: () or (--use-averaged-model)
# Defines:
#   student_plan_average            logs "plan (<student> student): average: --avg A [--use-averaged-model]"
#                                   (needs local/log.sh's log)
# What a runner's rows add per student (labels, report experiment, layers) stays in the runner.

_st_script="$(basename "${BASH_SOURCE[1]:-$0}")"
case "$student" in
  conformer_l4)
    student_conf=; tag=; suffix=; sched=("scheduler.total_steps=$steps"); avg_args=(); _st_avg=3 ;;
  zipformer)
    student_conf=conf/students/zipformer_s.yaml; tag=zf_; suffix=" (Zipformer s)"; sched=()
    avg_args=(--use-averaged-model); _st_avg=5 ;;
  *) echo "$_st_script: unknown --student '$student' (conformer_l4, zipformer)" >&2; exit 1 ;;
esac
if [ -z "$avg" ]; then avg="$_st_avg"; fi
student_args=()
if [ -n "$student_conf" ]; then student_args=(--config "$student_conf"); fi
unset _st_script _st_avg

student_plan_average() { log "plan ($student student): average: --avg $avg${avg_args[*]:+ ${avg_args[*]}}"; }
