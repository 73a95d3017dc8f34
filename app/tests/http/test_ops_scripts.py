"""The operations scripts (scripts/*.sh): every one parses, ours pass
shellcheck, and deploy.sh, destroy.sh and health-report.sh do the right
things in the right order against stand-ins for aws, terraform and buildah
and make (opsstub.py, first on PATH; real jq, curl and git). dev-up.sh and
dev-down.sh run for real: PostgreSQL and redis-server on loopback, reached
with psql, redis-cli and `kiln migrate`, stopped by pid.

Nothing here reaches AWS or a registry.
"""

import json
import os
import pathlib
import shutil
import socket
import stat
import subprocess
import tempfile

import pytest

import kilnhttp

pytestmark = pytest.mark.skipif(
    kilnhttp.STORES != "embedded" or bool(os.environ.get("KILN_SANITIZED")),
    reason="scripts, not the server: runs once, in the plain embedded run")

ROOT = kilnhttp.REPO_ROOT
SCRIPTS = ROOT / "scripts"
# The scripts of the image, deploy and development tooling; shellcheck must
# have nothing to say about them.
OWNED = ["image.sh", "deploy.sh", "destroy.sh", "health-report.sh", "aws-common.sh",
         "dev-up.sh", "dev-down.sh", "gen-check.sh"]
ENV_NAME = "staging"
TAG = "0.1.0-test"
REPO = "123456789012.dkr.ecr.eu-west-1.amazonaws.com/kiln-staging"
STATE_BUCKET = "kiln-tfstate-123456789012-eu-west-1"


# --------------------------------------------------------------- parsing --

def _interpreter(path):
    first = path.read_text().split("\n", 1)[0]
    if first.startswith("#!"):
        return "bash" if "bash" in first else "sh"
    return "bash"   # sourced files (aws-common.sh: `shell=bash`)


def test_every_script_parses():
    scripts = sorted(SCRIPTS.glob("*.sh"))
    assert scripts
    for s in scripts:
        shell = _interpreter(s)
        r = subprocess.run([shell, "-n", str(s)], capture_output=True, text=True)
        assert r.returncode == 0, f"{shell} -n {s.name}: {r.stderr}"


def test_our_scripts_are_executable_with_a_usage():
    for name in OWNED:
        path = SCRIPTS / name
        assert path.exists(), name
        if name == "aws-common.sh":
            continue
        assert path.stat().st_mode & stat.S_IXUSR, f"{name} is not executable"
        r = subprocess.run([str(path), "--help"], capture_output=True, text=True, timeout=10)
        assert r.returncode == 2 and "scripts/" in r.stderr, f"{name} --help: {r.returncode} {r.stderr!r}"


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck is not installed")
def test_our_scripts_pass_shellcheck():
    r = subprocess.run(["shellcheck", "-x", *(f"scripts/{n}" for n in OWNED)], cwd=ROOT, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr


# ----------------------------------------------------------------- stubs --

class Ops:
    """A folder with the stand-ins, their world, and a Terraform dir
    initialised for ENV_NAME."""

    def __init__(self, base, public_url):
        self.dir = base
        self.bin = base / "bin"
        self.bin.mkdir()
        stub = pathlib.Path(__file__).with_name("opsstub.py")
        for tool in ("aws", "terraform", "buildah", "make"):
            (self.bin / tool).symlink_to(stub)
        self.tf = base / "infra"
        (self.tf / ".terraform").mkdir(parents=True)
        self.init_for(ENV_NAME)
        (self.tf / "backend.hcl").write_text(
            f'bucket         = "{STATE_BUCKET}"\nregion         = "eu-west-1"\n'
            f'dynamodb_table = "kiln-tfstate-lock"\nencrypt        = true\n')
        family = f"kiln-{ENV_NAME}"
        self.world = {
            "repo": REPO, "cluster": family, "service": f"{family}-api", "family": family,
            "public_url": public_url, "topic": f"arn:aws:sns:eu-west-1:123456789012:{family}-alarms",
            "td_rev": 1, "td_images": {"1": f"{REPO}:0.0.9-old"},
            "service_td": f"arn:aws:ecs:eu-west-1:123456789012:task-definition/{family}:1",
            "running": 2, "targets": ["healthy", "healthy"], "alarms": [], "ecr_tags": ["0.0.9-old"],
            "state": self.state(["kiln-staging-uploads-123456789012-eu-west-1"]),
            "destroy_plan": self.plan(["kiln-staging-uploads-123456789012-eu-west-1"]),
        }
        self.save()

    def init_for(self, env):
        (self.tf / ".terraform" / "terraform.tfstate").write_text(json.dumps({
            "version": 3, "backend": {"type": "s3", "config": {
                "bucket": STATE_BUCKET, "key": f"kiln/{env}/terraform.tfstate",
                "dynamodb_table": "kiln-tfstate-lock", "region": "eu-west-1"}}}))

    @staticmethod
    def state(buckets):
        return {"values": {"root_module": {"resources": [
            {"mode": "managed", "type": "aws_s3_bucket", "address": f"aws_s3_bucket.b{i}",
             "values": {"bucket": b}} for i, b in enumerate(buckets)] + [
            {"mode": "managed", "type": "aws_ecs_cluster", "address": "aws_ecs_cluster.main",
             "values": {"name": "kiln-staging"}}]}}}

    @staticmethod
    def plan(buckets):
        return {"resource_changes": [
            {"type": "aws_s3_bucket", "address": f"aws_s3_bucket.b{i}",
             "change": {"actions": ["delete"], "before": {"bucket": b}}} for i, b in enumerate(buckets)] + [
            {"type": "aws_ecs_cluster", "address": "aws_ecs_cluster.main",
             "change": {"actions": ["delete"], "before": {"name": "kiln-staging"}}}]}

    def save(self):
        (self.dir / "world.json").write_text(json.dumps(self.world))

    def load(self):
        return json.loads((self.dir / "world.json").read_text())

    def calls(self):
        path = self.dir / "calls.jsonl"
        if not path.exists():
            return []
        return [json.loads(l) for l in path.read_text().splitlines()]

    def run(self, script, *args, input_text=None, timeout=60):
        env = dict(os.environ)
        env["PATH"] = f"{self.bin}:{env['PATH']}"
        env["OPSSTUB_DIR"] = str(self.dir)
        env["TF_DIR"] = str(self.tf)
        env["AWS_REGION"] = "eu-west-1"
        env.pop("AWS_DEFAULT_REGION", None)
        return subprocess.run([str(SCRIPTS / script), *args], cwd=ROOT, env=env,
                              input=input_text if input_text is not None else "",
                              capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def ops(tmp_path, server):
    return Ops(tmp_path, server.base_url)


def kind(call):
    """A call as a step name, or None for the read-only ones."""
    t, a = call["tool"], call["argv"]
    a = [x for x in a if not x.startswith("-chdir=")]
    if t == "buildah":
        return {"bud": "build", "login": "login", "push": "push"}.get(a[0])
    if t == "make":
        return "lambdas" if "lambdas" in a else "make"
    if t == "terraform":
        return {"apply": "apply", "init": "init"}.get(a[0])
    if t == "aws":
        s = list(a)
        for name in ("--region", "--output"):   # global options, before or after
            while name in s:
                i = s.index(name)
                del s[i:i + 2]
        if s[:2] == ["ecs", "run-task"]:
            return "migrate"
        if s[:3] == ["ecs", "wait", "tasks-stopped"]:
            return "migrate-wait"
        if s[:2] == ["ecs", "update-service"]:
            return "update-service"
        if s[:3] == ["ecs", "wait", "services-stable"]:
            return "wait-stable"
    return None


def steps(ops):
    return [k for k in (kind(c) for c in ops.calls()) if k]


def find(ops, tool, first):
    return [c for c in ops.calls() if c["tool"] == tool and first in c["argv"]]


# ---------------------------------------------------------------- deploy --

def test_deploy_builds_pushes_applies_migrates_then_moves_the_service(ops):
    r = ops.run("deploy.sh", "--env", ENV_NAME, "--tag", TAG, "--allow-dirty", "--yes")
    assert r.returncode == 0, r.stderr + r.stdout
    assert steps(ops) == ["build", "login", "push", "lambdas", "apply", "migrate", "migrate-wait",
                          "update-service", "wait-stable"], r.stderr
    make = find(ops, "make", "lambdas")[0]["argv"]
    assert "LAMBDA_ARCH=arm64" in make, make

    bud = find(ops, "buildah", "bud")[0]["argv"]
    assert bud[bud.index("--platform") + 1] == "linux/arm64"
    assert f"{REPO}:{TAG}" in bud and "Dockerfile" in bud
    assert any(a.startswith("BASE=") for a in bud) and any(a.startswith("KILN_VERSION=0.1.0") for a in bud)
    login = find(ops, "buildah", "login")[0]
    assert login["stdin"].strip() == "stub-ecr-password", "the ECR password goes through stdin"
    assert not any("stub-ecr-password" in a for c in ops.calls() for a in c["argv"]), \
        "the ECR password appeared on a command line"
    assert "stub-ecr-password" not in r.stdout + r.stderr
    push = find(ops, "buildah", "push")[0]["argv"]
    assert push[-1] == f"docker://{REPO}:{TAG}"
    apply = find(ops, "terraform", "apply")[0]["argv"]
    assert f"image_tag={TAG}" in apply and "-auto-approve" in apply

    new_td = f"arn:aws:ecs:eu-west-1:123456789012:task-definition/kiln-{ENV_NAME}:2"
    run_task = find(ops, "aws", "run-task")[0]["argv"]
    assert run_task[run_task.index("--task-definition") + 1] == new_td, \
        "migrations run with the revision the apply registered"
    overrides = json.loads(run_task[run_task.index("--overrides") + 1])
    assert overrides["containerOverrides"][0]["command"] == ["migrate"]
    net = json.loads(run_task[run_task.index("--network-configuration") + 1])
    assert net["awsvpcConfiguration"]["securityGroups"] == ["sg-tasks"]
    update = find(ops, "aws", "update-service")[0]["argv"]
    assert update[update.index("--task-definition") + 1] == new_td
    assert "health: OK" in r.stdout, r.stdout
    assert "/healthz?detailed=true" in r.stdout


def test_deploy_dry_run_changes_nothing_and_prints_every_step_in_order(ops):
    r = ops.run("deploy.sh", "--env", ENV_NAME, "--tag", TAG, "--allow-dirty", "--dry-run")
    assert r.returncode == 0, r.stderr + r.stdout
    assert steps(ops) == [], f"a dry run changed something: {steps(ops)}"
    assert find(ops, "terraform", "plan"), "a dry run shows the plan (read-only)"
    lines = [l for l in r.stdout.splitlines() if l.startswith("[dry-run] ")]
    order = ["buildah bud", "buildah login", "buildah push", "make --no-print-directory lambdas",
             " apply ", "ecs run-task",
             "ecs wait tasks-stopped", "ecs update-service", "ecs wait services-stable"]
    found = []
    for needle in order:
        idx = [i for i, l in enumerate(lines) if needle in l]
        assert idx, f"the dry run does not print {needle!r}:\n" + "\n".join(lines)
        found.append(idx[0])
    assert found == sorted(found), "\n".join(lines)
    assert ops.load()["td_rev"] == 1 and ops.load()["service_td"].endswith(":1")


def test_deploy_stops_before_the_service_when_migrations_fail(ops):
    ops.world["migrate_exit"] = 3
    ops.save()
    r = ops.run("deploy.sh", "--env", ENV_NAME, "--tag", TAG, "--allow-dirty", "--yes")
    assert r.returncode == 1, r.stderr
    assert steps(ops) == ["build", "login", "push", "lambdas", "apply", "migrate", "migrate-wait"]
    assert "exit code 3" in r.stderr and "previous revision" in r.stderr, r.stderr
    assert "0005_x failed" in r.stderr, "the migration task's log lines are shown"


def test_deploy_fails_when_the_circuit_breaker_rolled_back(ops):
    ops.world["rollback"] = True
    ops.save()
    r = ops.run("deploy.sh", "--env", ENV_NAME, "--tag", TAG, "--allow-dirty", "--yes")
    assert r.returncode == 1, r.stderr
    assert "rolled back" in r.stderr and "circuit breaker" in r.stderr, r.stderr


def test_deploy_of_an_existing_tag_skips_the_build(ops):
    r = ops.run("deploy.sh", "--env", ENV_NAME, "--tag", "0.0.9-old", "--skip-build",
                "--skip-migrate", "--yes", "--no-report")
    assert r.returncode == 0, r.stderr
    assert steps(ops) == ["lambdas", "apply", "update-service", "wait-stable"]
    r = ops.run("deploy.sh", "--env", ENV_NAME, "--tag", "0.0.9-old", "--allow-dirty", "--yes")
    assert r.returncode == 1 and "immutable" in r.stderr, r.stderr


def test_deploy_refuses_to_build_uncommitted_changes_without_the_flag(ops, tmp_path):
    # A copy of the repository's scripts in a git work tree with a change.
    repo = tmp_path / "repo"
    (repo / "scripts").mkdir(parents=True)
    for name in ("deploy.sh", "aws-common.sh", "health-report.sh"):
        shutil.copy2(SCRIPTS / name, repo / "scripts" / name)
    (repo / "VERSION").write_text("0.1.0\n")
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.com"]
    subprocess.run(git + ["init", "-q"], check=True)
    subprocess.run(git + ["add", "."], check=True)
    subprocess.run(git + ["commit", "-qm", "x"], check=True)
    (repo / "VERSION").write_text("0.1.1\n")
    env = dict(os.environ, PATH=f"{ops.bin}:{os.environ['PATH']}", OPSSTUB_DIR=str(ops.dir),
               TF_DIR=str(ops.tf), AWS_REGION="eu-west-1")
    for args in ([], ["--tag", TAG]):
        r = subprocess.run([str(repo / "scripts" / "deploy.sh"), "--env", ENV_NAME, "--yes", *args],
                           env=env, capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
        assert r.returncode == 1 and "uncommitted changes" in r.stderr, r.stderr
    assert not ops.calls()
    # a tag already in ECR needs no build, so a dirty tree does not matter
    r = subprocess.run([str(repo / "scripts" / "deploy.sh"), "--env", ENV_NAME, "--yes",
                        "--tag", "0.0.9-old", "--skip-build", "--skip-lambdas", "--no-report"],
                       env=env, capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
    assert r.returncode == 0, r.stderr


def test_deploy_refuses_a_terraform_dir_of_another_environment(ops):
    r = ops.run("deploy.sh", "--env", "production", "--tag", TAG, "--allow-dirty", "--yes")
    assert r.returncode == 1
    assert "kiln/staging/terraform.tfstate" in r.stderr and "--init" in r.stderr, r.stderr
    assert steps(ops) == [] and not ops.calls(), "nothing may run against the wrong state"


def test_init_switches_the_environment_even_in_a_dry_run(ops):
    r = ops.run("deploy.sh", "--env", "production", "--tag", TAG, "--allow-dirty", "--init", "--dry-run")
    assert r.returncode == 0, r.stderr
    init = find(ops, "terraform", "init")[0]["argv"]
    assert "-backend-config=key=kiln/production/terraform.tfstate" in init
    assert "-reconfigure" in init and "-backend-config=backend.hcl" in init
    calls = [kind(c) or c["argv"][1] for c in ops.calls() if c["tool"] == "terraform"]
    assert calls[0] == "init", f"init must come before any lookup: {calls}"
    assert [s for s in steps(ops) if s != "init"] == []


def test_first_deploy_creates_the_repository_first(ops):
    ops.world["applied_once"] = False
    ops.save()
    r = ops.run("deploy.sh", "--env", ENV_NAME, "--tag", TAG, "--allow-dirty", "--yes")
    assert r.returncode == 1 and "--first-deploy" in r.stderr, r.stderr
    r = ops.run("deploy.sh", "--env", ENV_NAME, "--tag", TAG, "--allow-dirty", "--yes", "--first-deploy", "--no-report")
    assert r.returncode == 0, r.stderr
    assert steps(ops)[:6] == ["apply", "build", "login", "push", "lambdas", "apply"], steps(ops)
    first_apply = find(ops, "terraform", "apply")[0]["argv"]
    assert "-target=aws_ecr_repository.kiln" in first_apply


# --------------------------------------------------------------- destroy --

def test_destroy_refuses_production_without_the_flag(ops):
    ops.init_for("production")
    r = ops.run("destroy.sh", "--env", "production", input_text="production\n")
    assert r.returncode == 1 and "--allow-production" in r.stderr, r.stderr
    assert not ops.calls()


def test_destroy_needs_the_environment_name_typed(ops):
    r = ops.run("destroy.sh", "--env", ENV_NAME, input_text="yes\n")
    assert r.returncode == 1 and "not confirmed" in r.stderr, r.stderr
    assert not find(ops, "terraform", "apply")
    r = ops.run("destroy.sh", "--env", ENV_NAME, input_text="")
    assert r.returncode == 1 and not find(ops, "terraform", "apply")


def test_destroy_applies_the_checked_plan_after_confirmation(ops):
    r = ops.run("destroy.sh", "--env", ENV_NAME, input_text=f"{ENV_NAME}\n")
    assert r.returncode == 0, r.stderr
    plan = find(ops, "terraform", "plan")[0]["argv"]
    assert "-destroy" in plan
    out_file = next(a for a in plan if a.startswith("-out=")).split("=", 1)[1]
    apply = find(ops, "terraform", "apply")[0]["argv"]
    assert apply[-1] == out_file, "the apply must be of the plan that was checked"
    assert "kiln-staging-uploads-123456789012-eu-west-1" in r.stdout
    assert STATE_BUCKET in r.stdout and "Kept" in r.stdout
    assert ops.load().get("destroyed")


def test_destroy_dry_run_applies_nothing(ops):
    r = ops.run("destroy.sh", "--env", ENV_NAME, "--dry-run")
    assert r.returncode == 0, r.stderr
    assert not find(ops, "terraform", "apply") and "[dry-run]" in r.stdout


def test_destroy_never_deletes_the_state_bucket(ops):
    ops.world["state"] = Ops.state(["kiln-staging-uploads", STATE_BUCKET])
    ops.world["destroy_plan"] = Ops.plan(["kiln-staging-uploads", STATE_BUCKET])
    ops.save()
    r = ops.run("destroy.sh", "--env", ENV_NAME, input_text=f"{ENV_NAME}\n")
    assert r.returncode == 1 and "state bucket" in r.stderr, r.stderr
    assert not find(ops, "terraform", "apply")


def test_destroy_never_deletes_a_bucket_outside_the_state(ops):
    ops.world["destroy_plan"] = Ops.plan(["kiln-staging-uploads-123456789012-eu-west-1",
                                          "somebody-elses-bucket"])
    ops.save()
    r = ops.run("destroy.sh", "--env", ENV_NAME, input_text=f"{ENV_NAME}\n")
    assert r.returncode == 1 and "somebody-elses-bucket" in r.stderr, r.stderr
    assert not find(ops, "terraform", "apply")


# --------------------------------------------------------- health report --

def test_health_report_ok(ops):
    r = ops.run("health-report.sh", "--env", ENV_NAME)
    assert r.returncode == 0, r.stdout + r.stderr
    for needle in ("desired 2, running 2", "PRIMARY", "healthy", "steady state", "none",
                   "status 200", '"status": "ok"', "health: OK"):
        assert needle in r.stdout, f"{needle!r} missing:\n{r.stdout}"
    assert steps(ops) == [], "the report changes nothing"


def test_health_report_lists_problems(ops, tmp_path):
    ops.world["running"] = 1
    ops.world["targets"] = ["healthy", "unhealthy"]
    ops.world["alarms"] = [
        {"AlarmName": "kiln-staging-alb-5xx", "StateReason": "Threshold Crossed",
         "StateUpdatedTimestamp": "2026-01-01T00:00:00Z", "AlarmActions": [ops.world["topic"]]},
        {"AlarmName": "kiln-staging-eu-alb-5xx", "StateReason": "another stack's",
         "StateUpdatedTimestamp": "2026-01-01T00:00:00Z",
         "AlarmActions": ["arn:aws:sns:eu-west-1:123456789012:kiln-staging-eu-alarms"]}]
    # a public URL where nothing listens
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    ops.world["public_url"] = f"http://127.0.0.1:{s.getsockname()[1]}"
    s.close()
    ops.save()
    r = ops.run("health-report.sh", "--env", ENV_NAME)
    assert r.returncode == 1, r.stdout
    for needle in ("1 of 2 tasks running", "1 target(s) not healthy", "1 alarm(s) in ALARM",
                   "/healthz answered 000", "kiln-staging-alb-5xx", "Health checks failed"):
        assert needle in r.stdout, f"{needle!r} missing:\n{r.stdout}"
    assert "kiln-staging-eu-alb-5xx" not in r.stdout, "another environment's alarm was reported"


# ------------------------------------------------------ dev-up, dev-down --

def _pids(d):
    found = []
    for pidfile in [d / "pg" / "postmaster.pid", d / "redis" / "redis.pid"]:
        if pidfile.exists():
            found.append(int(pidfile.read_text().split()[0]))
    return found


def _alive(pid):
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False


@pytest.mark.skipif(not (shutil.which("psql") and shutil.which("redis-cli")
                         and os.path.exists("/usr/lib/postgresql/15/bin/initdb")),
                    reason="needs postgresql and redis-server (scripts/deps.sh)")
def test_dev_up_and_down_for_real(kiln_binary):
    # /tmp, not pytest's tmp_path: the postgres user must reach the folder.
    d = pathlib.Path(tempfile.mkdtemp(prefix="kiln-dev-", dir="/tmp"))
    try:
        up = subprocess.run([str(SCRIPTS / "dev-up.sh"), str(d)], capture_output=True, text=True,
                            timeout=50)
        assert up.returncode == 0, up.stderr
        env = {}
        for line in up.stdout.splitlines():
            assert line.startswith("export "), line
            k, _, v = line[len("export "):].partition("=")
            env[k] = v
        assert set(env) == {"DATABASE_URL", "VALKEY_HOST", "VALKEY_PORT"}, env
        assert "psql" in up.stderr and "DB_HOST=127.0.0.1" in up.stderr
        dev_env = dict(l.split("=", 1) for l in (d / "dev.env").read_text().splitlines())
        assert dev_env == env

        q = subprocess.run(["psql", env["DATABASE_URL"], "-XAtc", "select current_user"],
                           capture_output=True, text=True, timeout=10)
        assert q.stdout.strip() == "kiln", q.stderr
        p = subprocess.run(["redis-cli", "-h", env["VALKEY_HOST"], "-p", env["VALKEY_PORT"], "ping"],
                           capture_output=True, text=True, timeout=10)
        assert p.stdout.strip() == "PONG", p.stderr
        kenv = kilnhttp.clean_env(overrides=env)
        m = subprocess.run([kiln_binary, "migrate"], env=kenv, capture_output=True, text=True, timeout=30)
        assert m.returncode == 0 and "applied" in m.stdout, m.stdout + m.stderr

        pids = _pids(d)
        assert len(pids) == 2 and all(_alive(p) for p in pids)
        down = subprocess.run([str(SCRIPTS / "dev-down.sh"), str(d)], capture_output=True, text=True,
                              timeout=40)
        assert down.returncode == 0, down.stderr
        assert not any(_alive(p) for p in pids), "dev-down left a server running"
        assert not (d / "dev.env").exists()

        # Up again: same ports, the data survived.
        again = subprocess.run([str(SCRIPTS / "dev-up.sh"), str(d)], capture_output=True, text=True,
                               timeout=50)
        assert again.returncode == 0, again.stderr
        assert again.stdout == up.stdout
        m = subprocess.run([kiln_binary, "migrate"], env=kenv, capture_output=True, text=True, timeout=30)
        assert m.returncode == 0 and "up to date" in m.stdout, m.stdout + m.stderr
    finally:
        subprocess.run([str(SCRIPTS / "dev-down.sh"), "--purge", str(d)], capture_output=True, timeout=40)
        shutil.rmtree(d, ignore_errors=True)
    assert not d.exists()
