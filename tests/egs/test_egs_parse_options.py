"""egs/synth/ASR/local/parse_options.sh, the one option parser of the recipe scripts: each case runs bash on a
small script that sets defaults and sources the parser, then on the recipe scripts themselves (argument errors
only: nothing is prepared or trained)."""

from __future__ import annotations

import os
import shlex
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
ASR = REPO / "egs" / "synth" / "ASR"
PARSER = ASR / "local" / "parse_options.sh"

HEADER = """\
#!/usr/bin/env bash
# A toy recipe: prints its options.
#
# Options (defaults in brackets):
#   --foo-bar V    a value [1]
#   --empty E      empty by default []
set -euo pipefail
"""

DEFAULTS = """\
foo_bar=1
empty=
overrides=()
readonly positional=p
export exported=e
"""

PRINT = """\
echo "foo_bar=[$foo_bar] empty=[$empty] overrides=[${overrides[*]:-}] n=${#overrides[@]} args=$#"
"""


def toy(tmp_path: Path, *args: str, rest: bool = False, usage_fn: str = "", after: str = PRINT):
    """Write the toy script (defaults, the parser, then ``after``) and run it with ``args``."""
    body = HEADER + DEFAULTS + usage_fn
    if rest:
        body += "parse_options_rest=overrides\n"
    body += f"source {shlex.quote(str(PARSER))}\n" + after
    script = tmp_path / "toy.sh"
    script.write_text(body)
    return subprocess.run(["bash", str(script), *args], capture_output=True, text=True, timeout=30)


def test_defaults_are_kept_without_arguments(tmp_path):
    proc = toy(tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "foo_bar=[1] empty=[] overrides=[] n=0 args=0\n"


@pytest.mark.parametrize(
    "args, foo_bar, empty",
    [
        (["--foo-bar", "2"], "2", ""),
        (["--foo-bar=3"], "3", ""),
        (["--foo_bar", "4"], "4", ""),  # the variable's own spelling maps to the same variable
        (["--foo-bar=a=b"], "a=b", ""),  # only the first '=' separates the value
        (["--foo-bar", "two words", "--empty", "x"], "two words", "x"),
        (["--foo-bar", "--empty"], "--empty", ""),  # a value is taken as it is, even one that looks like an option
        (["--foo-bar=", "--empty="], "", ""),  # an empty value
        (["--foo-bar", "1", "--foo-bar", "5"], "5", ""),  # the last one wins
    ],
)
def test_values_set_the_variable_of_the_option(tmp_path, args, foo_bar, empty):
    proc = toy(tmp_path, *args)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == f"foo_bar=[{foo_bar}] empty=[{empty}] overrides=[] n=0 args=0\n"


@pytest.mark.parametrize(
    "args, message",
    [
        (["--bogus", "1"], "unknown option --bogus"),
        (["--foo-bar", "1", "--no-such=2"], "unknown option --no-such"),
        (["--positional", "x"], "unknown option --positional"),  # readonly: a positional argument read before
        (["--overrides", "x"], "unknown option --overrides"),  # an array
        (["--exported", "x"], "unknown option --exported"),  # the environment
        (["--path", "/x"], "unknown option --path"),
        (["--PATH", "/x"], "unknown option --PATH"),  # only lower-case names
        (["--parse-options-rest", "x"], "unknown option --parse-options-rest"),  # the parser's own names
        (["--_po_name", "x"], "unknown option --_po_name"),
        (["-x"], "unknown option -x"),
        (["--", "a=1"], "unknown option --: this script takes no arguments after the options"),
        (["extra"], "unexpected argument 'extra'"),
        (["--foo-bar"], "option --foo-bar needs a value"),
        (["--empty", "x", "--foo-bar"], "option --foo-bar needs a value"),
    ],
)
def test_bad_arguments_are_errors_naming_them(tmp_path, args, message):
    proc = toy(tmp_path, *args)
    assert proc.returncode == 1
    assert proc.stderr == f"toy.sh: {message} (see toy.sh --help)\n"
    assert proc.stdout == ""  # the script stops at the parser


def test_unknown_option_is_reported_before_a_missing_value(tmp_path):
    proc = toy(tmp_path, "--bogus")
    assert proc.returncode == 1 and "unknown option --bogus" in proc.stderr


@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_help_prints_the_header_comment_and_exits_0(tmp_path, flag):
    proc = toy(tmp_path, "--foo-bar", "2", flag, "--bogus")  # --help wins over what follows it
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == (
        "A toy recipe: prints its options.\n"
        "\n"
        "Options (defaults in brackets):\n"
        "  --foo-bar V    a value [1]\n"
        "  --empty E      empty by default []\n"
    )
    assert proc.stderr == ""


def test_help_uses_the_scripts_usage_function(tmp_path):
    proc = toy(tmp_path, "--help", usage_fn='usage() { echo "usage: toy.sh [--foo-bar V]"; }\n')
    assert proc.returncode == 0 and proc.stdout == "usage: toy.sh [--foo-bar V]\n"


def test_double_dash_hands_the_rest_to_the_named_array(tmp_path):
    proc = toy(tmp_path, "--foo-bar", "2", "--", "a=1", "--bogus", "b c", rest=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "foo_bar=[2] empty=[] overrides=[a=1 --bogus b c] n=3 args=0\n"
    proc = toy(tmp_path, "--", rest=True)
    assert proc.returncode == 0 and proc.stdout.endswith("n=0 args=0\n")


def test_the_parser_leaves_no_names_behind(tmp_path):
    after = 'compgen -v | grep -E "^(_po_|parse_options_)" || echo no-vars\n'
    after += 'compgen -A function | grep "^_po_" || echo no-functions\n'
    proc = toy(tmp_path, "--foo-bar", "2", rest=True, after=after)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "no-vars\nno-functions\n"


def test_a_script_run_from_another_directory_prints_its_own_header(tmp_path):
    toy(tmp_path)  # writes toy.sh
    sub = tmp_path / "elsewhere"
    sub.mkdir()
    proc = subprocess.run(["bash", "../toy.sh", "--help"], capture_output=True, text=True, timeout=30, cwd=sub)
    assert proc.returncode == 0 and proc.stdout.startswith("A toy recipe: prints its options.\n")


# the recipe scripts: each sources the parser (no copy of the loop), and reports bad arguments through it
SCRIPTS = {
    "egs/synth/ASR/prepare.sh": [],
    "egs/synth/ASR/run.sh": [],
    "egs/synth/ASR/run_kd.sh": ["self_kd"],
    "egs/synth/ASR/run_ar_nar.sh": ["xs"],
    "egs/synth/ASR/run_inter_aed.sh": [],
    "egs/synth/ASR/run_streaming_kd.sh": [],
    "egs/synth/ASR/run_repr_kd.sh": [],
    "egs/synth/ASR/demo.sh": [],
    "egs/synth/ASR/local/prepare_lm.sh": [],
    "egs/librispeech/ASR/prepare.sh": [],
}


def run_script(path: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "CI": "true"}
    return subprocess.run(["bash", str(REPO / path), *args], capture_output=True, text=True, timeout=60, env=env)


@pytest.mark.parametrize("path", sorted(SCRIPTS))
def test_recipe_scripts_use_the_shared_parser(path):
    text = (REPO / path).read_text()
    assert "local/parse_options.sh" in text or "/parse_options.sh" in text
    assert "while [ $# -gt 0 ]" not in text and "unknown option" not in text


@pytest.mark.parametrize("path", sorted(SCRIPTS))
def test_recipe_scripts_refuse_an_unknown_option(path):
    name = Path(path).name
    proc = run_script(path, *SCRIPTS[path], "--bogus-option", "1")
    assert proc.returncode == 1
    assert proc.stderr == f"{name}: unknown option --bogus-option (see {name} --help)\n"
    assert proc.stdout == ""


@pytest.mark.parametrize("path", sorted(p for p in SCRIPTS if not p.endswith("demo.sh")))
def test_recipe_scripts_refuse_a_missing_value(path):
    proc = run_script(path, *SCRIPTS[path], "--stage" if "prepare_lm" not in path else "--lang-dir")
    assert proc.returncode == 1 and "needs a value" in proc.stderr


@pytest.mark.parametrize(
    "path, args, message",
    [
        # the --x=y form reaches each script's own checks of the value
        ("egs/synth/ASR/prepare.sh", ["--size=huge"], "--size must be tiny, small or default"),
        ("egs/synth/ASR/run_repr_kd.sh", ["--mpnet-proj=5"], "--mpnet-proj must be 0 or 384"),
        ("egs/synth/ASR/run_ar_nar.sh", ["xs", "--steps=10", "--stage2-from=10"], "need 0 < --stage2-from < --steps"),
        ("egs/synth/ASR/run_streaming_kd.sh", ["--dynamic=maybe"], "--dynamic true|false, not maybe"),
        ("egs/synth/ASR/run_inter_aed.sh", ["--models=no_such_model"], "unknown model 'no_such_model'"),
        # the positional argument of run_kd.sh / run_ar_nar.sh is not an option
        ("egs/synth/ASR/run_kd.sh", ["self_kd", "--method", "ctc_kd"], "unknown option --method"),
        ("egs/synth/ASR/run_ar_nar.sh", ["xs", "--size", "m"], "unknown option --size"),
        # renamed internals are not options: the old variable behind --stage2-from, run_inter_aed's MLM dir
        ("egs/synth/ASR/run_ar_nar.sh", ["xs", "--from", "5"], "unknown option --from"),
        ("egs/synth/ASR/run_inter_aed.sh", ["--mlm-exp", "x"], "unknown option --mlm-exp"),
        # "--" only where the script takes config overrides
        ("egs/synth/ASR/prepare.sh", ["--", "x=1"], "unknown option --"),
    ],
)
def test_recipe_scripts_check_values_after_parsing(path, args, message):
    proc = run_script(path, *args)
    assert proc.returncode != 0
    assert message in proc.stderr
