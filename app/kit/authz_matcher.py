"""Casbin's matcher, parsed once per process instead of on every decision.

pycasbin turns the model's matcher into a Python expression and runs `ast.parse` on it for
every `enforce` call. On CPython 3.11 the ast module keeps its recursion counter per
interpreter, not per thread (python/cpython#106905): a parse racing another thread's parse —
a model loading beside the requests, say — raises `SystemError: AST constructor recursion
depth mismatch`, and that request answered 500 (seen under a bulk upload). The matcher text
never changes for a loaded model, so its tree is parsed once and reused; the evaluator, with
the role manager's current functions, is still built per decision.
"""

from __future__ import annotations

import ast
import functools
import re
from typing import Any

import casbin
from casbin.util.expression import SimpleEval


@functools.lru_cache(maxsize=64)
def _parsed(expression: str) -> ast.expr:
    node = ast.parse(expression.strip()).body[0]
    assert isinstance(node, ast.Expr)
    return node.value


def matcher_expression(expr: str, functions: dict[str, Any] | None = None) -> SimpleEval:
    """What `casbin.CoreEnforcer._get_expression` returns, without parsing `expr` again."""
    # The same rewrites pycasbin applies before parsing.
    expr = expr.replace("&&", "and").replace("||", "or")
    expr = re.sub(r"!(?!=)", "not ", expr)
    evaluator = SimpleEval("", functions)
    evaluator.expr = expr
    evaluator.ast_parsed_value = _parsed(expr)
    return evaluator


class CachedMatcherEnforcer(casbin.AsyncEnforcer):  # type: ignore[misc]
    """An AsyncEnforcer whose matcher is parsed once (see the module's docstring)."""

    @staticmethod
    def _get_expression(expr: str, functions: dict[str, Any] | None = None) -> SimpleEval:
        return matcher_expression(expr, functions)
