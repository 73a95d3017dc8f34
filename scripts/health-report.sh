#!/usr/bin/env bash
# Health of one environment, from outside: the ECS service's task counts,
# its recent deployments and events, the load balancer's view of each
# target, the stack's alarms in ALARM, and GET /healthz?detailed=true
# through the public URL.
#
#   scripts/health-report.sh --env ENV [options]
#
#     --env ENV             environment (reads infra/'s Terraform outputs)
#     --init                terraform init for ENV's state key first
#     --cluster NAME        }
#     --service NAME        } instead of the Terraform outputs
#     --url URL             }  (ecs_cluster_name, ecs_service_name,
#     --alarm-prefix P      }   public_url; alarms: "<cluster>-",
#     --alarm-topic ARN     }   only those notifying alarm_topic_arn)
#     --no-backend-check    do not check that infra/ is initialised for ENV
#                           (with all of the above given, terraform is not run)
#     -h, --help
#
# Read-only: runs aws ... describe/list calls and one HTTPS request.
# Exit status: 0 healthy; 1 something needs a look (running < desired,
# a deployment in progress or failed, an unhealthy target, an alarm in
# ALARM, /healthz not 200); 2 usage.
set -euo pipefail
cd "$(dirname "$0")/.."
prog=health-report
# shellcheck source=scripts/aws-common.sh
. scripts/aws-common.sh

usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0" >&2; exit 2; }

env_name=
cluster=
service=
url=
alarm_prefix=
alarm_topic=
backend_check=true
do_init=false
while [ $# -gt 0 ]; do
    case $1 in
        --env) [ $# -ge 2 ] || usage; env_name=$2; shift 2 ;;
        --init) do_init=true; shift ;;
        --cluster) [ $# -ge 2 ] || usage; cluster=$2; shift 2 ;;
        --service) [ $# -ge 2 ] || usage; service=$2; shift 2 ;;
        --url) [ $# -ge 2 ] || usage; url=$2; shift 2 ;;
        --alarm-prefix) [ $# -ge 2 ] || usage; alarm_prefix=$2; shift 2 ;;
        --alarm-topic) [ $# -ge 2 ] || usage; alarm_topic=$2; shift 2 ;;
        --no-backend-check) backend_check=false; shift ;;
        -h|--help) usage ;;
        *) printf '%s: unknown argument: %s\n' "$prog" "$1" >&2; usage ;;
    esac
done
need aws jq curl

if [ -z "$cluster" ] || [ -z "$service" ] || [ -z "$url" ]; then
    [ -n "$env_name" ] || { echo "$prog: --env is required (or --cluster, --service and --url)" >&2; usage; }
    check_env_name "$env_name"
    need terraform
    if $do_init; then tf_init "$env_name"; fi
    if $backend_check; then check_backend "$env_name"; fi
    load_outputs
    cluster=${cluster:-$(need_out ecs_cluster_name)}
    service=${service:-$(need_out ecs_service_name)}
    url=${url:-$(out public_url)}
    alarm_topic=${alarm_topic:-$(out alarm_topic_arn)}
fi
alarm_prefix=${alarm_prefix:-$cluster-}

problems=()
problem() { problems+=("$*"); }
section() { printf '\n## %s\n' "$*"; }

printf '# Health of %s%s (%s)\n' "${env_name:-$cluster}" "${REGION:+ in $REGION}" "$(date -u +%Y-%m-%dT%H:%M:%SZ)"

# --- the service ---
section "ECS service $cluster/$service"
svc_json=$(aws_ ecs describe-services --cluster "$cluster" --services "$service" --output json) ||
    die "cannot describe the service"
svc=$(jq -c '.services[0] // empty' <<<"$svc_json")
if [ -z "$svc" ] || [ "$(jq -r '.status' <<<"$svc")" != ACTIVE ]; then
    echo "service not found or not active: $(jq -c '.failures' <<<"$svc_json")"
    problem "service $service is not active"
    tgs=()
else
    read -r desired running pending td <<<"$(jq -r '"\(.desiredCount) \(.runningCount) \(.pendingCount) \(.taskDefinition)"' <<<"$svc")"
    echo "tasks: desired $desired, running $running, pending $pending"
    echo "task definition: ${td##*/}"
    [ "$running" -ge "$desired" ] || problem "$running of $desired tasks running"
    echo
    echo "deployments (newest first):"
    jq -r '.deployments | sort_by(.createdAt) | reverse | .[] |
        "  \(.status)  \(.rolloutState // "-")  \(.taskDefinition | split("/") | last)  running \(.runningCount)/\(.desiredCount)  failed tasks \(.failedTasks // 0)  since \(.createdAt)\(if .rolloutStateReason then "\n      " + .rolloutStateReason else "" end)"' <<<"$svc"
    n=$(jq '.deployments | length' <<<"$svc")
    [ "$n" -le 1 ] || problem "a deployment is in progress ($n deployments)"
    if [ "$(jq -r '[.deployments[] | select(.rolloutState == "FAILED")] | length' <<<"$svc")" != 0 ]; then
        problem "a deployment failed (circuit breaker)"
    fi
    echo
    echo "recent events:"
    jq -r '.events[:8][] | "  \(.createdAt)  \(.message)"' <<<"$svc"
    mapfile -t tgs < <(jq -r '.loadBalancers[]?.targetGroupArn' <<<"$svc")
fi

# --- the load balancer's targets ---
for tg in "${tgs[@]}"; do
    section "Targets of ${tg##*:targetgroup/}"
    th=$(aws_ elbv2 describe-target-health --target-group-arn "$tg" --output json) ||
        { problem "cannot read target health"; continue; }
    jq -r '.TargetHealthDescriptions[] |
        "  \(.Target.Id):\(.Target.Port)  \(.TargetHealth.State)\(if .TargetHealth.Reason then "  " + .TargetHealth.Reason else "" end)\(if .TargetHealth.Description then " (" + .TargetHealth.Description + ")" else "" end)"' <<<"$th"
    healthy=$(jq '[.TargetHealthDescriptions[] | select(.TargetHealth.State == "healthy")] | length' <<<"$th")
    other=$(jq '[.TargetHealthDescriptions[] | select(.TargetHealth.State != "healthy" and .TargetHealth.State != "draining")] | length' <<<"$th")
    echo "  healthy: $healthy"
    [ "$healthy" -gt 0 ] || problem "no healthy target"
    [ "$other" = 0 ] || problem "$other target(s) not healthy"
done

# --- alarms ---
section "Alarms in ALARM (${alarm_prefix}*)"
al=$(aws_ cloudwatch describe-alarms --state-value ALARM --alarm-name-prefix "$alarm_prefix" --output json) ||
    { problem "cannot read alarms"; al='{"MetricAlarms":[]}'; }
# Only this stack's: the prefix of "kiln-prod" also matches "kiln-prod-eu".
alarms=$(jq -c --arg t "$alarm_topic" '[(.MetricAlarms // [])[], (.CompositeAlarms // [])[] |
    select($t == "" or ((.AlarmActions // []) | index($t)))]' <<<"$al")
if [ "$(jq length <<<"$alarms")" = 0 ]; then
    echo "  none"
else
    jq -r '.[] | "  \(.AlarmName)  since \(.StateUpdatedTimestamp)\n      \(.StateReason)"' <<<"$alarms"
    problem "$(jq length <<<"$alarms") alarm(s) in ALARM"
fi

# --- the public endpoint ---
section "GET ${url:-<no public_url>}/healthz?detailed=true"
if [ -z "$url" ]; then
    problem "no public URL"
else
    body=$(curl -sS --max-time 10 -w '\n%{http_code} %{time_total}' "$url/healthz?detailed=true" 2>&1) || true
    last=${body##*$'\n'}
    code=${last%% *}
    body=${body%$'\n'*}
    printf '  status %s in %ss\n' "$code" "${last#* }"
    if jq -e . >/dev/null 2>&1 <<<"$body"; then jq . <<<"$body" | sed 's/^/  /'; else printf '  %s\n' "$body"; fi
    [ "$code" = 200 ] || problem "/healthz answered ${code:-nothing}"
fi

# --- verdict ---
echo
if [ ${#problems[@]} = 0 ]; then
    echo "health: OK"
else
    echo "health: ${#problems[@]} problem(s)"
    printf '  - %s\n' "${problems[@]}"
    exit 1
fi
