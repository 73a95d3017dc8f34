#!/usr/bin/env bash
# Destroy one environment's stack (terraform destroy, through a saved plan
# that is checked before it is applied).
#
#   scripts/destroy.sh --env ENV [options]
#
#     --env ENV            the environment (state key <project>/ENV/terraform.tfstate)
#     --var-file FILE      Terraform variables of the environment (repeatable)
#     --init               terraform init for ENV's state key first
#     --allow-production   required to destroy prod, production, prod-*, production-*
#     --dry-run            make and check the plan, print it, change nothing
#     -h, --help
#
# What it will not do:
#   - run for an environment other than the one infra/ is initialised for;
#   - delete the Terraform state backend (its bucket, lock table or KMS key,
#     from infra/.terraform or infra/backend.hcl): if the plan would, it
#     stops;
#   - delete any bucket that is not in this environment's Terraform state:
#     only the saved plan is applied, and every bucket it deletes must be a
#     managed aws_s3_bucket of the state; it never empties a bucket itself
#     (Terraform refuses a non-empty one unless the stack set force_destroy);
#   - go on without the environment's name typed at the prompt.
# Before it: turn deletion protection off with an apply
# (-var deletion_protection=false), see docs/OPERATIONS.md.
set -euo pipefail
cd "$(dirname "$0")/.."
prog=destroy
# shellcheck source=scripts/aws-common.sh
. scripts/aws-common.sh

usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0" >&2; exit 2; }

env_name=
var_files=()
do_init=false
allow_production=false
while [ $# -gt 0 ]; do
    case $1 in
        --env) [ $# -ge 2 ] || usage; env_name=$2; shift 2 ;;
        --var-file) [ $# -ge 2 ] || usage; var_files+=("$(abs_path "$2")"); shift 2 ;;
        --init) do_init=true; shift ;;
        --allow-production) allow_production=true; shift ;;
        --dry-run) DRY_RUN=true; shift ;;
        -h|--help) usage ;;
        *) printf '%s: unknown argument: %s\n' "$prog" "$1" >&2; usage ;;
    esac
done
[ -n "$env_name" ] || { echo "$prog: --env is required" >&2; usage; }
check_env_name "$env_name"
for f in "${var_files[@]}"; do [ -f "$f" ] || die "no such var file: $f"; done
if is_production "$env_name" && ! $allow_production; then
    die "'$env_name' is a production environment: pass --allow-production to destroy it"
fi
need terraform jq

tf_vars=()
for f in "${var_files[@]}"; do tf_vars+=("-var-file=$f"); done

if $do_init; then tf_init "$env_name"; fi
check_backend "$env_name"

# --- the state backend, which must survive ---
backend=$(backend_json)
hcl_value() {   # hcl_value KEY: KEY = "value" in backend.hcl
    [ -f "$TF_DIR/backend.hcl" ] || return 0
    sed -n "s/^[[:space:]]*$1[[:space:]]*=[[:space:]]*\"\\([^\"]*\\)\".*/\\1/p" "$TF_DIR/backend.hcl" | head -n 1
}
state_bucket=$(jq -r '.bucket // empty' <<<"$backend"); state_bucket=${state_bucket:-$(hcl_value bucket)}
lock_table=$(jq -r '.dynamodb_table // empty' <<<"$backend"); lock_table=${lock_table:-$(hcl_value dynamodb_table)}
state_key=$(jq -r '.kms_key_id // empty' <<<"$backend"); state_key=${state_key:-$(hcl_value kms_key_id)}
[ -n "$state_bucket" ] || die "cannot tell the state bucket (no backend settings in $TF_DIR/.terraform or $TF_DIR/backend.hcl)"
log "state backend (kept): bucket $state_bucket${lock_table:+, lock table $lock_table}"

# --- the plan ---
workdir=$(mktemp -d)
trap 'rm -rf "$workdir"' EXIT
plan=$workdir/destroy.tfplan
step "terraform plan -destroy"
tf plan -destroy -input=false -out="$plan" "${tf_vars[@]}" >&2 || die "terraform plan -destroy failed"
tf show -json "$plan" >"$workdir/plan.json" || die "terraform show of the plan failed"
tf show -json >"$workdir/state.json" || die "terraform show of the state failed"

# Buckets the state manages (root and child modules).
jq -r '[.. | objects | select(.mode? == "managed" and .type? == "aws_s3_bucket") | .values.bucket] | .[]' \
    "$workdir/state.json" | sort -u >"$workdir/state-buckets"
# What the plan deletes.
jq -r '.resource_changes[]? | select(.change.actions | index("delete")) | select(.type == "aws_s3_bucket") | .change.before.bucket' \
    "$workdir/plan.json" | sort -u >"$workdir/plan-buckets"
deletes=$(jq '[.resource_changes[]? | select(.change.actions | index("delete"))] | length' "$workdir/plan.json")
others=$(jq '[.resource_changes[]? | select(.change.actions != ["delete"] and .change.actions != ["no-op"] and .change.actions != ["read"])] | length' "$workdir/plan.json")

[ "$others" = 0 ] || die "the destroy plan would also create or change $others resource(s); refusing"
if grep -qxF "$state_bucket" "$workdir/plan-buckets" "$workdir/state-buckets"; then
    die "the state bucket $state_bucket is in this stack's state: refusing (move it out with terraform state rm first)"
fi
while read -r b; do
    [ -n "$b" ] || continue
    grep -qxF "$b" "$workdir/state-buckets" || die "the plan deletes bucket '$b', which is not a managed bucket of the state: refusing"
done <"$workdir/plan-buckets"
if [ -n "$lock_table" ] && jq -e --arg t "$lock_table" \
        '[.resource_changes[]? | select(.type == "aws_dynamodb_table" and .change.before.name == $t)] | length > 0' \
        "$workdir/plan.json" >/dev/null; then
    die "the plan deletes the state lock table $lock_table: refusing"
fi
if [ -n "$state_key" ] && jq -e --arg k "$state_key" \
        '[.resource_changes[]? | select(.type == "aws_kms_key" and (.change.before.arn == $k or .change.before.key_id == $k))] | length > 0' \
        "$workdir/plan.json" >/dev/null; then
    die "the plan deletes the state's KMS key: refusing"
fi

echo
echo "Environment '$env_name': terraform destroys $deletes resource(s)."
if [ -s "$workdir/plan-buckets" ]; then
    echo "Buckets deleted with it (this stack's own; a bucket that is not empty makes"
    echo "Terraform stop unless the stack set force_destroy on it):"
    sed 's/^/  - /' "$workdir/plan-buckets"
fi
echo "Kept: the state backend ($state_bucket), and anything not in this state."
echo "Aurora's final snapshot and AWS Backup recovery points follow the stack's settings"
echo "(docs/OPERATIONS.md, Destroying an environment)."

if $DRY_RUN; then
    printf '[dry-run] %s\n' "$(quote_cmd terraform -chdir="$TF_DIR" apply -input=false destroy.tfplan)"
    log "dry run: nothing was changed"
    exit 0
fi

printf '\nType the environment name (%s) to destroy it: ' "$env_name" >&2
answer=
read -r answer || true
if [ "$answer" != "$env_name" ]; then
    die "not confirmed; nothing was changed"
fi
step "terraform apply (the checked destroy plan)"
printf '+ %s\n' "$(quote_cmd terraform -chdir="$TF_DIR" apply -input=false "$plan")" >&2
tf apply -input=false "$plan"
log "environment $env_name destroyed (state backend kept)"
