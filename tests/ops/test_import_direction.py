"""asr_kd.ops is a leaf layer: none of its modules imports asr_kd.decoding, asr_kd.kd or asr_kd.training
(decoders call ops, never the other way round). Checked statically (every import statement, also inside
functions, relative imports resolved, ``importlib.import_module("...")`` calls) and at run time."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import asr_kd

FORBIDDEN = ("asr_kd.decoding", "asr_kd.kd", "asr_kd.training")
PKG_ROOT = Path(asr_kd.__file__).resolve().parent
OPS_DIR = PKG_ROOT / "ops"


def module_name(path: Path) -> str:
    rel = path.relative_to(PKG_ROOT.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def imported_modules(source: str, module: str, is_package: bool = False) -> list[tuple[int, str]]:
    """``(line, absolute module name)`` of every import in ``source`` (the code of ``module``)."""
    package = module if is_package else module.rpartition(".")[0]
    out = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module
            out.append((node.lineno, target))
            out += [(node.lineno, f"{target}.{a.name}") for a in node.names]  # from asr_kd import decoding
        elif isinstance(node, ast.Call):
            f = node.func
            name = f.attr if isinstance(f, ast.Attribute) else getattr(f, "id", None)
            if (
                name in ("import_module", "__import__")
                and node.args
                and isinstance(node.args[0], ast.Constant)
                and isinstance(node.args[0].value, str)
            ):
                out.append((node.lineno, node.args[0].value))
    return out


def forbidden_imports(source: str, module: str, is_package: bool = False) -> list[str]:
    found = sorted(set(imported_modules(source, module, is_package)))
    return [
        f"line {line}: {name}" for line, name in found if any(name == f or name.startswith(f + ".") for f in FORBIDDEN)
    ]


def ops_modules() -> list[Path]:
    return sorted(OPS_DIR.rglob("*.py"))


def test_the_checker_sees_every_import_form():
    src = (
        "import os\n"
        "from asr_kd.ops import frame_kd\n"
        "def f():\n"
        "    from asr_kd.decoding.ctc import ctc_greedy_search\n"
        "    import asr_kd.kd.methods as m\n"
        "from ..training import loop\n"
        "from .. import decoding\n"
        "from asr_kd import kd\n"
        "importlib.import_module('asr_kd.decoding.mask_ctc')\n"
    )
    bad = forbidden_imports(src, "asr_kd.ops.example")
    assert sorted({int(b.split(":")[0].split()[1]) for b in bad}) == [4, 5, 6, 7, 8, 9]
    assert forbidden_imports("from asr_kd.decodingx import y\nfrom . import nbest\n", "asr_kd.ops.x") == []


def test_ops_modules_exist():
    names = {p.name for p in ops_modules()}
    assert {"__init__.py", "ctc_prefix_beam.py", "mask_ctc_beam.py", "frame_kd.py"} <= names


@pytest.mark.parametrize("path", ops_modules(), ids=lambda p: p.name)
def test_no_ops_module_imports_decoding_kd_or_training(path):
    bad = forbidden_imports(path.read_text(encoding="utf-8"), module_name(path), path.name == "__init__.py")
    assert not bad, f"{path.relative_to(PKG_ROOT.parent)} imports upper layers: {bad}"


def test_importing_ops_loads_no_upper_layer():
    code = (
        "import sys, pkgutil, importlib, asr_kd.ops as ops\n"
        "for m in pkgutil.walk_packages(ops.__path__, 'asr_kd.ops.'):\n"
        "    importlib.import_module(m.name)\n"
        f"bad = sorted(m for m in sys.modules if m.startswith({FORBIDDEN!r}))\n"
        "print(bad)\n"
        "sys.exit(1 if bad else 0)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_references_live_beside_the_ops_and_are_re_exported():
    from asr_kd.decoding import common, ctc
    from asr_kd.ops import NBest, ctc_prefix_beam, mask_ctc_beam

    assert ctc.ctc_prefix_beam_search is ctc_prefix_beam.ctc_prefix_beam_search_reference
    assert common.NBest is NBest
    assert mask_ctc_beam.mask_ctc_beam_step_reference.__module__ == "asr_kd.ops.mask_ctc_beam"
