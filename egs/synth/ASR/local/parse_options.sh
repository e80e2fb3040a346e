# Option parsing of the recipe scripts (Kaldi style), sourced, not run: set every option's default as a shell
# variable, then source this file with no arguments, so that it reads and shifts the script's own "$@":
#
#   stage=0                # --stage N
#   stop_stage=5           # --stop-stage M
#   data_dir=data          # --data-dir D
#   parse_options_rest=overrides   # optional: what follows "--" goes to the array $overrides
#   source "$(dirname "${BASH_SOURCE[0]}")/local/parse_options.sh"
#
# Arguments:
#   --foo-bar V, --foo-bar=V   set foo_bar to V ("--foo_bar" works too). foo_bar must be a lower-case shell variable
#                              the script has set before sourcing: not an exported variable (the environment),
#                              an array or a readonly variable (e.g. a positional argument read before parsing).
#                              Any other name is an unknown option: an error naming it. V is taken as it is
#                              (it may be empty, or start with "--"); its check is the script's, after parsing.
#                              --foo-bar as the last argument (no value) is an error.
#   -h, --help                 print the script's usage to stdout and exit 0: its usage function if it defines
#                              one, else its header comment (line 2 up to the first line that does not start
#                              with "#", with "# " stripped)
#   --                         ends the options; the arguments after it go to the array named by
#                              parse_options_rest (e.g. config overrides); an error when that is not set
# Any other argument is an error. Errors are "<script>: <what> (see <script> --help)" on stderr, exit status 1.
# On return "$@" is empty, and the parser's own names (_po_*, parse_options_rest) are unset.
#
# Recipes other than egs/synth/ASR source this file by its relative path (no copy, no symlink), e.g.
# egs/librispeech/ASR/prepare.sh: source "$(dirname "${BASH_SOURCE[0]}")/../../synth/ASR/local/parse_options.sh"

_po_script_path="${BASH_SOURCE[1]:-$0}"
_po_script="$(basename "$_po_script_path")"

_po_fail() {
  echo "$_po_script: $* (see $_po_script --help)" >&2
  exit 1
}

_po_usage() {
  if declare -F usage > /dev/null; then
    usage
  else
    awk 'NR == 1 { next } !/^#/ { exit } { sub(/^# ?/, ""); print }' "$_po_script_path"
  fi
}

# _po_check_name OPTION NAME: NAME is a variable the script set as an option default, else an error
_po_check_name() {
  [[ "$2" =~ ^[a-z][a-z0-9_]*$ ]] && [[ "$2" != _po_* && "$2" != parse_options_* ]] \
    || _po_fail "unknown option $1"
  _po_decl="$(declare -p "$2" 2> /dev/null)" || _po_fail "unknown option $1"  # no locals: they would be visible
  _po_attrs="${_po_decl#declare -}"
  _po_attrs="${_po_attrs%% *}"
  case "$_po_attrs" in *[xaArn]*) _po_fail "unknown option $1" ;; esac
}

while [ $# -gt 0 ]; do
  case "$1" in
    -h | --help)
      _po_usage
      exit 0
      ;;
    --)
      shift
      [ -n "${parse_options_rest:-}" ] || _po_fail "unknown option --: this script takes no arguments after the options"
      [[ "$parse_options_rest" =~ ^[a-z][a-z0-9_]*$ ]] || _po_fail "parse_options_rest=$parse_options_rest is not a variable name"
      eval "$parse_options_rest=(\"\$@\")"
      set --
      ;;
    --?*)
      _po_opt="${1%%=*}"
      _po_name="${_po_opt#--}"
      _po_name="${_po_name//-/_}"
      _po_check_name "$_po_opt" "$_po_name"
      if [[ "$1" == *=* ]]; then
        _po_value="${1#*=}"
        shift
      else
        [ $# -ge 2 ] || _po_fail "option $_po_opt needs a value"
        _po_value="$2"
        shift 2
      fi
      printf -v "$_po_name" '%s' "$_po_value"
      ;;
    -?*) _po_fail "unknown option $1" ;;
    *) _po_fail "unexpected argument '$1'" ;;
  esac
done

unset -v _po_script_path _po_script _po_opt _po_name _po_value _po_decl _po_attrs parse_options_rest
unset -f _po_fail _po_usage _po_check_name
