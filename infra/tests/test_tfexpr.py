"""The evaluator the naming and value checks rely on (tfexpr.py), against
results Terraform gives for the same expressions."""

import pytest

from tfexpr import UNKNOWN, Context, EvalError, evaluate


def ev(src, **vars_):
    return evaluate(src, Context(vars=vars_))


def test_templates_and_escapes():
    assert ev("${var.a}-${var.b}", a="x", b="y") == "x-y"
    assert ev("user:Project$${var.a}", a="x") == "user:Project${var.a}"
    assert ev('${format("user:Project$%s", var.a)}', a="kiln") == "user:Project$kiln"
    assert ev("${var.n}", n=3) == 3  # a lone interpolation keeps its type


def test_string_functions():
    assert ev('${substr("abcdef", 0, 3)}') == "abc"
    assert ev('${substr("abc", 1, -1)}') == "bc"
    assert ev('${trimsuffix("ab-", "-")}') == "ab"
    assert ev('${lower("AbC")}') == "abc"
    assert ev('${sha1("abc")}') == "a9993e364706816aba3e25717850c26c9cd0d89d"  # FIPS 180 test vector
    assert ev('${element(split(":", "arn:aws:rds:eu-west-1:1:db-proxy:prx-1"), 6)}') == "prx-1"


def test_conditionals_and_comparisons():
    assert ev("${length(var.s) <= 3 ? var.s : substr(var.s, 0, 3)}", s="abcdef") == "abc"
    assert ev("${var.a == null ? 0 : 1}", a=None) == 0
    assert ev("${!var.b && true}", b=False) is True


def test_for_expressions_and_collections():
    assert ev('${[for x in ["a", "b"] : upper(x)]}') == ["A", "B"]
    assert ev('${{for k, v in {a = 1, b = null} : k => v if v != null}}') == {"a": 1}
    assert ev('${merge({a = 1}, {b = 2})}') == {"a": 1, "b": 2}


def test_validations():
    cond = '${can(regex("^[a-z][a-z0-9-]{0,19}$", var.environment))}'
    assert ev(cond, environment="a" * 20) is True
    assert ev(cond, environment="a" * 21) is False
    assert ev(cond, environment="Prod") is False


def test_resource_attributes_are_unknown():
    assert ev("${aws_db_proxy.main.arn}") is UNKNOWN
    assert ev("x-${aws_db_proxy.main.name}") is UNKNOWN
    # ...but never null
    assert ev("${aws_db_proxy.main.arn != null}") is True


def test_unsupported_is_an_error():
    with pytest.raises(EvalError):
        ev("${nosuchfunction(1)}")
    with pytest.raises(EvalError):
        ev("${var.missing}")
