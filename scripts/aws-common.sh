# shellcheck shell=bash
# Shared by scripts/deploy.sh, scripts/destroy.sh and scripts/health-report.sh
# (sourced, not run). The caller sets `prog` and runs from the repository
# root.
#
# What these scripts expect of the Terraform stack in infra/ (outputs.tf):
#   ecr_repository_url, ecs_cluster_name, ecs_service_name,
#   task_definition_arn, container_name, migration_task_overrides,
#   run_task_network_configuration, public_url, app_log_group_name,
#   alarm_topic_arn; the variable image_tag; alarm names that start with
#   "<project>-<environment>-" (the cluster's name); one state key per
#   environment, "<project>/<environment>/terraform.tfstate", in the bucket
#   of infra/backend.hcl.

: "${prog:?prog must be set by the caller}"

log() { printf '%s: %s\n' "$prog" "$*" >&2; }
warn() { printf '%s: warning: %s\n' "$prog" "$*" >&2; }
die() { printf '%s: error: %s\n' "$prog" "$*" >&2; exit 1; }
step() { printf '\n%s: == %s\n' "$prog" "$*" >&2; }

DRY_RUN=${DRY_RUN:-false}
TF_DIR=${TF_DIR:-infra}
PROJECT=${PROJECT:-kiln}
REGION=${AWS_REGION:-${AWS_DEFAULT_REGION:-}}

# A command line as one shell-quoted string (for messages and --dry-run).
quote_cmd() {
    local out="" a q="'"
    for a in "$@"; do
        if [[ $a =~ ^[A-Za-z0-9_./:=@%+,-]+$ ]]; then
            out+=" $a"
        else
            out+=" '${a//$q/$q\\$q$q}'"
        fi
    done
    printf '%s' "${out# }"
}

# mutate CMD...: a command that changes something. Printed; run unless this
# is a dry run. (Nothing secret is ever on a command line: the ECR password
# goes through a pipe.)
mutate() {
    if $DRY_RUN; then
        printf '[dry-run] %s\n' "$(quote_cmd "$@")"
        return 0
    fi
    printf '+ %s\n' "$(quote_cmd "$@")" >&2
    "$@"
}

need() {
    local t
    for t in "$@"; do
        command -v "$t" >/dev/null 2>&1 || die "'$t' is not installed (PATH=$PATH)"
    done
}

is_production() {
    case $1 in prod|production|prod-*|production-*) return 0 ;; *) return 1 ;; esac
}

check_env_name() {
    [[ $1 =~ ^[a-z][a-z0-9-]{0,19}$ ]] || die "bad environment name '$1' (lower case, at most 20 characters)"
}

aws_() {   # aws with the region when one is known
    if [ -n "$REGION" ]; then aws --region "$REGION" "$@"; else aws "$@"; fi
}

# aws_line ARGS...: the same as a printable command line.
aws_line() {
    if [ -n "$REGION" ]; then quote_cmd aws --region "$REGION" "$@"; else quote_cmd aws "$@"; fi
}

# mutate_aws ARGS...: mutate for an aws command; its answer is not shown.
mutate_aws() {
    if [ -n "$REGION" ]; then set -- --region "$REGION" "$@"; fi
    if $DRY_RUN; then mutate aws "$@"; else mutate aws "$@" >/dev/null; fi
}

tf() { terraform -chdir="$TF_DIR" "$@"; }

abs_path() {   # var files are given relative to the caller, terraform runs in TF_DIR
    case $1 in /*) printf '%s' "$1" ;; *) printf '%s/%s' "$PWD" "$1" ;; esac
}

# --- Terraform backend: one state key per environment ---

backend_json() {
    local f=$TF_DIR/.terraform/terraform.tfstate
    [ -f "$f" ] && jq -c '.backend.config // {}' "$f" 2>/dev/null || echo '{}'
}

# tf_init ENV: point infra/ at ENV's state. It changes only the local
# infra/.terraform, so it runs in a dry run too (whose read-only lookups
# must see ENV's state, not another's).
tf_init() {
    [ -f "$TF_DIR/backend.hcl" ] ||
        die "$TF_DIR/backend.hcl is missing: terraform -chdir=$TF_DIR/state-backend output -raw backend_config > $TF_DIR/backend.hcl"
    DRY_RUN=false mutate terraform -chdir="$TF_DIR" init -input=false -reconfigure \
        -backend-config=backend.hcl "-backend-config=key=$PROJECT/$1/terraform.tfstate" >&2
}

# check_backend ENV: infra/ is initialised for ENV's state key, so that a
# command for one environment never runs against another's state.
check_backend() {
    local want=$PROJECT/$1/terraform.tfstate key
    key=$(backend_json | jq -r '.key // empty')
    if [ -z "$key" ]; then
        die "$TF_DIR/ is not initialised (no backend state key): pass --init, or run
    terraform -chdir=$TF_DIR init -reconfigure -backend-config=backend.hcl -backend-config=key=$want"
    fi
    if [ "$key" != "$want" ]; then
        die "$TF_DIR/ is initialised for state key '$key', not '$want' (environment '$1'): pass --init to switch"
    fi
}

# --- Terraform outputs ---

TF_OUTPUTS='{}'
load_outputs() {
    TF_OUTPUTS=$(tf output -json) || die "terraform output failed"
    [ -n "$TF_OUTPUTS" ] || TF_OUTPUTS='{}'
}

# out NAME: an output's value ('' when absent); lists and maps as JSON.
out() {
    jq -r --arg n "$1" '.[$n].value // empty | if type == "string" then . else tojson end' <<<"$TF_OUTPUTS"
}

# need_out NAME: out, or die.
need_out() {
    local v
    v=$(out "$1")
    [ -n "$v" ] || die "terraform output '$1' is missing (has the stack been applied? see docs/OPERATIONS.md)"
    printf '%s' "$v"
}
