"""The command line: version, --help, unknown commands and flags, healthcheck."""

import requests

from kilnhttp import clean_env, free_port, run_kiln


def test_version_prints_the_served_version(server):
    result = run_kiln(["version"])
    assert result.returncode == 0, result
    out = result.stdout.decode().strip()
    assert out, "kiln version printed nothing on stdout"
    served = requests.get(server.url("/"), timeout=5).json()["version"]
    assert served in out, f"`kiln version` printed {out!r}; GET / says version {served!r}"


def test_help_lists_the_commands_and_exits_0():
    result = run_kiln(["--help"])
    assert result.returncode == 0, result
    text = (result.stdout + result.stderr).decode()
    for command in ("serve", "version", "healthcheck"):
        assert command in text, f"--help does not mention {command!r}: {text!r}"


def test_unknown_command_exits_2_with_a_message():
    result = run_kiln(["frobnicate"])
    assert result.returncode == 2, result
    assert result.stderr.strip(), "no message on stderr"


def test_unknown_flag_exits_2_without_serving():
    # A free port, so that a serve that wrongly starts would not collide; it
    # would then hang and run_kiln reports the timeout.
    result = run_kiln(["serve", "--nope"], env=clean_env(free_port()), timeout=5)
    assert result.returncode == 2, result
    assert result.stderr.strip(), "no message on stderr"


def test_healthcheck_against_a_running_server_exits_0(server):
    result = run_kiln(["healthcheck"], env=clean_env(server.port))
    assert result.returncode == 0, result


def test_healthcheck_against_a_closed_port_exits_1():
    result = run_kiln(["healthcheck"], env=clean_env(free_port()))
    assert result.returncode == 1, result
