#!/usr/bin/python3
"""Stand-in for `aws`, `terraform`, `buildah` and `make` in the tests of
scripts/deploy.sh, destroy.sh and health-report.sh (test_ops_scripts.py).

Installed as links to this file in a folder put first on PATH; the
name it is called by picks the tool. Every call is appended to
$OPSSTUB_DIR/calls.jsonl as {"tool", "argv", "stdin"}; the answers come from
$OPSSTUB_DIR/world.json, a small model of one environment that the calls
change (apply registers a new task definition revision, update-service
moves the service, ...).
"""

import json
import os
import pathlib
import sys

DIR = pathlib.Path(os.environ["OPSSTUB_DIR"])
WORLD = DIR / "world.json"


def load():
    return json.loads(WORLD.read_text())


def save(w):
    WORLD.write_text(json.dumps(w, indent=1))


def record(tool, argv, stdin):
    with open(DIR / "calls.jsonl", "a") as f:
        f.write(json.dumps({"tool": tool, "argv": argv, "stdin": stdin}) + "\n")


def opt(argv, name, default=None):
    """--name VALUE or --name=VALUE."""
    for i, a in enumerate(argv):
        if a == name and i + 1 < len(argv):
            return argv[i + 1]
        if a.startswith(name + "="):
            return a.split("=", 1)[1]
    return default


def emit(obj):
    print(json.dumps(obj))


def td_arn(w, rev):
    return f"arn:aws:ecs:eu-west-1:123456789012:task-definition/{w['family']}:{rev}"


def outputs(w):
    o = {
        "ecr_repository_url": w["repo"],
        "ecs_cluster_name": w["cluster"],
        "ecs_service_name": w["service"],
        "task_definition_arn": td_arn(w, w["td_rev"]),
        "task_definition_family": w["family"],
        "container_name": "kiln",
        "migration_task_overrides": json.dumps(
            {"containerOverrides": [{"name": "kiln", "command": ["migrate"]}]}),
        "run_task_network_configuration": json.dumps(
            {"awsvpcConfiguration": {"subnets": ["subnet-a", "subnet-b"],
                                     "securityGroups": ["sg-tasks"], "assignPublicIp": "DISABLED"}}),
        "public_url": w["public_url"],
        "app_log_group_name": f"/ecs/{w['cluster']}/kiln",
        "alarm_topic_arn": w["topic"],
    }
    if not w.get("applied_once", True):
        return {}
    return {k: {"value": v, "type": "string", "sensitive": False} for k, v in o.items()}


def terraform(argv, w):
    args = [a for a in argv if not a.startswith("-chdir=")]
    cmd = args[0] if args else ""
    if cmd == "output":
        emit(outputs(w))
    elif cmd == "init":
        chdir = next(a.split("=", 1)[1] for a in argv if a.startswith("-chdir="))
        key = next(a.split("=", 2)[2] for a in args if a.startswith("-backend-config=key="))
        f = pathlib.Path(chdir) / ".terraform" / "terraform.tfstate"
        state = json.loads(f.read_text())
        state["backend"]["config"]["key"] = key
        f.write_text(json.dumps(state))
        print("Terraform has been successfully initialized!")
    elif cmd == "plan":
        out = next((a.split("=", 1)[1] for a in args if a.startswith("-out=")), None)
        if out:
            pathlib.Path(out).write_text(json.dumps(w["destroy_plan"]))
        print("Plan: stub")
    elif cmd == "show":
        files = [a for a in args[1:] if not a.startswith("-")]
        if files:
            emit(json.loads(pathlib.Path(files[0]).read_text()))
        else:
            emit(w["state"])
    elif cmd == "apply":
        files = [a for a in args[1:] if not a.startswith("-") and a != "image_tag"
                 and not a.startswith("image_tag=")]
        if any(a.startswith("-target=") for a in args):
            w["applied_once"] = False   # outputs stay unset after a targeted apply
        else:
            tag = next((a.split("=", 1)[1] for a in args if a.startswith("image_tag=")), None)
            if tag and not files:
                w["td_rev"] += 1
                w["td_images"][str(w["td_rev"])] = f"{w['repo']}:{tag}"
                w["applied_once"] = True
            if files:
                w["destroyed"] = True
        print("Apply complete!")
    else:
        print(f"terraform stub: unknown command {argv}", file=sys.stderr)
        return 1
    return 0


def aws(argv, w):
    args = list(argv)
    # drop the global options the scripts add
    for name in ("--region", "--output"):
        while name in args:
            i = args.index(name)
            del args[i:i + 2]
    service, op = args[0], args[1]
    if (service, op) == ("ecr", "get-login-password"):
        print("stub-ecr-password")
    elif (service, op) == ("ecr", "describe-images"):
        tag = opt(args, "--image-ids", "").split("=", 1)[-1]
        if tag in w.get("ecr_tags", []):
            emit({"imageDetails": [{"imageTags": [tag]}]})
        else:
            print("An error occurred (ImageNotFoundException)", file=sys.stderr)
            return 254
    elif (service, op) == ("ecr", "describe-repositories"):
        emit({"repositories": [{"repositoryUri": w["repo"]}]})
    elif (service, op) == ("ecs", "describe-task-definition"):
        rev = opt(args, "--task-definition").rsplit(":", 1)[1]
        emit({"taskDefinition": {"containerDefinitions": [
            {"name": "kiln", "image": w["td_images"].get(rev, "unknown")}]}})
    elif (service, op) == ("ecs", "run-task"):
        w["migrate_td"] = opt(args, "--task-definition")
        emit({"tasks": [{"taskArn": "arn:aws:ecs:eu-west-1:123456789012:task/c/0123abcd"}],
              "failures": []})
    elif (service, op) == ("ecs", "wait"):
        pass
    elif (service, op) == ("ecs", "describe-tasks"):
        code = w.get("migrate_exit", 0)
        emit({"tasks": [{"stoppedReason": "Essential container in task exited",
                         "containers": [{"name": "kiln", "exitCode": code}]}]})
    elif (service, op) == ("logs", "get-log-events"):
        emit({"events": [{"message": "kiln migrate: migration 0005_x failed: stub"}]})
    elif (service, op) == ("ecs", "update-service"):
        want = opt(args, "--task-definition")
        if w.get("rollback"):
            w["deployments"] = [
                {"status": "PRIMARY", "rolloutState": "COMPLETED", "taskDefinition": w["service_td"],
                 "runningCount": 2, "desiredCount": 2, "createdAt": "2026-01-01T00:00:00Z"},
                {"status": "INACTIVE", "rolloutState": "FAILED", "taskDefinition": want,
                 "runningCount": 0, "desiredCount": 0, "createdAt": "2026-01-01T00:01:00Z",
                 "rolloutStateReason": "ECS deployment circuit breaker: tasks failed to start."}]
        else:
            w["service_td"] = want
        emit({"service": {}})
    elif (service, op) == ("ecs", "describe-services"):
        deployments = w.get("deployments") or [
            {"status": "PRIMARY", "rolloutState": "COMPLETED", "taskDefinition": w["service_td"],
             "runningCount": w["running"], "desiredCount": 2, "failedTasks": 0,
             "createdAt": "2026-01-01T00:00:00Z"}]
        emit({"services": [{
            "status": "ACTIVE", "desiredCount": 2, "runningCount": w["running"], "pendingCount": 0,
            "taskDefinition": w["service_td"], "deployments": deployments,
            "events": [{"createdAt": "2026-01-01T00:00:00Z",
                        "message": f"(service {w['service']}) has reached a steady state."}],
            "loadBalancers": [{"targetGroupArn": "arn:aws:elasticloadbalancing:eu-west-1:123456789012:targetgroup/kiln-staging/abc"}],
            "networkConfiguration": {"awsvpcConfiguration": {"subnets": ["subnet-a"]}},
        }], "failures": []})
    elif (service, op) == ("elbv2", "describe-target-health"):
        emit({"TargetHealthDescriptions": [
            {"Target": {"Id": f"10.0.0.{i}", "Port": 8443},
             "TargetHealth": {"State": state} if state == "healthy" else
             {"State": state, "Reason": "Target.ResponseCodeMismatch",
              "Description": "Health checks failed with these codes: [503]"}}
            for i, state in enumerate(w["targets"], 1)]})
    elif (service, op) == ("cloudwatch", "describe-alarms"):
        prefix = opt(args, "--alarm-name-prefix", "")
        emit({"MetricAlarms": [a for a in w.get("alarms", []) if a["AlarmName"].startswith(prefix)],
              "CompositeAlarms": []})
    else:
        print(f"aws stub: unknown call {argv}", file=sys.stderr)
        return 2
    return 0


def buildah(argv, w):
    if argv and argv[0] == "login":
        if opt(argv, "--password-stdin") is None and "--password-stdin" not in argv:
            return 3
    return 0


def main():
    tool = os.path.basename(sys.argv[0])
    argv = sys.argv[1:]
    stdin = ""
    if tool == "buildah" and argv and argv[0] == "login":
        stdin = sys.stdin.read()
    record(tool, argv, stdin)
    w = load()
    rc = {"terraform": terraform, "aws": aws, "buildah": buildah,
          "make": lambda argv, w: 0}[tool](argv, w)
    save(w)
    return rc


if __name__ == "__main__":
    sys.exit(main())
