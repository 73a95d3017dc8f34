"""Fixtures of the infra policy suite (make infra-check).

Run from the repository root with Debian's interpreter, after
scripts/npm-deps.sh has installed @cdktf/hcl2json:

    /usr/bin/python3 -m pytest -q infra/tests
"""

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import hcl  # noqa: E402


@pytest.fixture(scope="session")
def tree():
    """infra/ parsed once for the whole run."""
    t = hcl.load(hcl.INFRA)
    assert not t.errors, "parse errors:\n" + "\n".join(t.errors)
    return t
