"""One test per property of the infrastructure policy (policy.py): each
asserts that its check finds no violation in infra/.

The tests are generated from policy.CHECKS, so every check has a test of
its name: test_<check>. `pytest -v infra/tests/test_policy.py` lists them.
"""

import policy


def _make(name, fn):
    def test(tree):
        violations = fn(tree)
        assert not violations, f"{name}:\n  " + "\n  ".join(violations)

    test.__name__ = f"test_{name}"
    test.__doc__ = fn.__doc__
    return test


for _name, _fn in policy.CHECKS.items():
    globals()[f"test_{_name}"] = _make(_name, _fn)
