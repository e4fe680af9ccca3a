"""The one table of our custom ops (keras_expander/firmware/ops.py) against the C++ kernels, and against the Python
writers: every name, register function and source agrees, and no module spells an op name of its own."""

import ast
import re
from pathlib import Path

import pytest

from keras_expander.firmware import fused_rnn, ops, sparse_rewrite

PACKAGE = Path(ops.__file__).resolve().parents[1]
OP_NAME = re.compile(r'constexpr\s+char\s+(k\w+OpName)\[\]\s*=\s*"([^"]+)"\s*;')
DECLARATION = re.compile(r"TFLMRegistration\s+(Register_\w+)\s*\(\s*\)\s*;")
DEFINITION = re.compile(r"TFLMRegistration\s+(Register_\w+)\s*\(\s*\)\s*\{")
SPELLED_OP = re.compile(r"^KE_\w+_V\d+$")


def header_ops() -> dict[str, set[str]]:
    """Header name -> the op names it spells."""
    return {path.name: {name for _, name in OP_NAME.findall(path.read_text())}
            for path in ops.KERNELS_DIR.glob("*.h")}


@pytest.mark.parametrize("op", ops.CUSTOM_OPS.values(), ids=lambda op: op.name)
def test_each_op_matches_its_header_and_sources(op):
    header = (ops.KERNELS_DIR / op.header).read_text()
    assert op.name in {name for _, name in OP_NAME.findall(header)}, f"{op.header} does not spell {op.name}"
    assert op.register in DECLARATION.findall(header), f"{op.header} does not declare {op.register}()"
    assert "namespace keras_expander {" in header and op.register_function == f"keras_expander::{op.register}"
    assert op.name.endswith(f"_V{op.version}")
    defined = {name for source in op.sources for name in DEFINITION.findall((ops.KERNELS_DIR / source).read_text())}
    assert op.register in defined, f"none of {op.sources} defines {op.register}()"


def test_every_op_the_kernels_spell_is_in_the_table():
    spelled = set().union(*header_ops().values())
    assert spelled == set(ops.CUSTOM_OPS), f"headers only: {spelled - set(ops.CUSTOM_OPS)}, " \
                                           f"table only: {set(ops.CUSTOM_OPS) - spelled}"
    defined = {name for path in ops.KERNELS_DIR.glob("*.cc") for name in DEFINITION.findall(path.read_text())}
    assert defined == {op.register for op in ops.CUSTOM_OPS.values()}


def test_the_writers_take_their_op_names_from_the_table():
    assert {sparse_rewrite.SPARSE_LSTM_OP, sparse_rewrite.SPARSE_FULLY_CONNECTED_OP, fused_rnn.SIMPLE_RNN_OP,
            fused_rnn.SPARSE_SIMPLE_RNN_OP, fused_rnn.GRU_OP, fused_rnn.SPARSE_GRU_OP} == set(ops.CUSTOM_OPS)


def _code_strings(tree: ast.AST) -> list[str]:
    """String constants of a module that are not docstrings."""
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
                  and node.body and isinstance(node.body[0], ast.Expr)
                  and isinstance(node.body[0].value, ast.Constant)}
    return [node.value for node in ast.walk(tree) if isinstance(node, ast.Constant)
            and isinstance(node.value, str) and id(node) not in docstrings]


def test_no_other_module_spells_an_op_name():
    spelled = {f"{path.relative_to(PACKAGE.parent)}: {value}" for path in PACKAGE.rglob("*.py")
               if path.name != "ops.py" for value in _code_strings(ast.parse(path.read_text()))
               if SPELLED_OP.match(value)}
    assert not spelled, sorted(spelled)
