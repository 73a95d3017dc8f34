#!/usr/bin/env bash
# Deploy Kiln to one environment: build the image, push it to ECR, register
# the new task definition (terraform apply), run the migrations as a one-off
# ECS task, move the service to the new revision, wait until it is stable,
# and print the health report.
#
#   scripts/deploy.sh --env ENV [options]
#
#     --env ENV          environment (the Terraform state key
#                        <project>/ENV/terraform.tfstate); required
#     --var-file FILE    Terraform variables of the environment (repeatable)
#     --tag TAG          image tag (default: VERSION-<commit>, e.g. 0.1.0-c2bd88e)
#     --skip-build       deploy a tag already in ECR (rollback: --tag OLD --skip-build)
#     --skip-migrate     do not run the migration task (e.g. a rollback)
#     --skip-lambdas     do not build the rotation functions' zips (Terraform
#                        needs them: `make lambdas LAMBDA_ARCH=arm64` by default)
#     --first-deploy     the stack does not exist yet: create the ECR
#                        repository first (terraform apply -target), then
#                        go on as usual (docs/OPERATIONS.md, First deploy)
#     --init             terraform init for ENV's state key first (also in a
#                        dry run: it changes only infra/.terraform)
#     --yes              terraform apply -auto-approve (no prompt)
#     --platform P       image platform (default linux/arm64, the task's)
#     --base IMAGE       Debian 12 base image (default docker.io/library/debian:bookworm-slim)
#     --allow-dirty      build from a work tree with uncommitted changes
#     --wait-minutes N   how long to wait for the migration task and for the
#                        service to be stable (default 30 each)
#     --no-report        skip the health report
#     --dry-run          run only the read-only lookups (terraform output,
#                        terraform plan, aws ... describe) and print every
#                        command that would change something
#     -h, --help
#
# Environment: AWS credentials as for the aws CLI; AWS_REGION (default: the
# ECR repository's region); TF_DIR (infra); PROJECT (kiln);
# BUILDAH_ISOLATION (e.g. chroot where buildah has no OCI runtime).
# Needs: aws, terraform, jq, curl, buildah (unless --skip-build); building
# linux/arm64 on an amd64 host needs qemu-user-static (binfmt_misc).
# Exit status: 0 deployed and healthy; 1 failed (the service was not moved
# unless the message says so); 3 deployed, but the health report found
# problems.
set -euo pipefail
cd "$(dirname "$0")/.."
prog=deploy
# shellcheck source=scripts/aws-common.sh
. scripts/aws-common.sh

usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0" >&2; exit 2; }

env_name=
tag=
var_files=()
skip_build=false
skip_migrate=false
skip_lambdas=false
first_deploy=false
do_init=false
auto_approve=false
platform=linux/arm64
base=docker.io/library/debian:bookworm-slim
allow_dirty=false
wait_minutes=30
report=true

while [ $# -gt 0 ]; do
    case $1 in
        --env) [ $# -ge 2 ] || usage; env_name=$2; shift 2 ;;
        --var-file) [ $# -ge 2 ] || usage; var_files+=("$(abs_path "$2")"); shift 2 ;;
        --tag) [ $# -ge 2 ] || usage; tag=$2; shift 2 ;;
        --skip-build) skip_build=true; shift ;;
        --skip-migrate) skip_migrate=true; shift ;;
        --skip-lambdas) skip_lambdas=true; shift ;;
        --first-deploy) first_deploy=true; shift ;;
        --init) do_init=true; shift ;;
        --yes) auto_approve=true; shift ;;
        --platform) [ $# -ge 2 ] || usage; platform=$2; shift 2 ;;
        --base) [ $# -ge 2 ] || usage; base=$2; shift 2 ;;
        --allow-dirty) allow_dirty=true; shift ;;
        --wait-minutes) [ $# -ge 2 ] || usage; wait_minutes=$2; shift 2 ;;
        --no-report) report=false; shift ;;
        --dry-run) DRY_RUN=true; shift ;;
        -h|--help) usage ;;
        *) printf '%s: unknown argument: %s\n' "$prog" "$1" >&2; usage ;;
    esac
done
[ -n "$env_name" ] || { echo "$prog: --env is required" >&2; usage; }
check_env_name "$env_name"
[[ $wait_minutes =~ ^[1-9][0-9]*$ ]] || die "--wait-minutes must be a positive number"
for f in "${var_files[@]}"; do [ -f "$f" ] || die "no such var file: $f"; done

need aws terraform jq curl
$skip_lambdas || need make
$skip_build || need buildah

# --- the tag ---
version=$(tr -d '[:space:]' < VERSION)
commit=$(git rev-parse --short HEAD 2>/dev/null || true)
dirty=false
if [ -n "$commit" ] && [ -n "$(git status --porcelain --untracked-files=no 2>/dev/null)" ]; then
    dirty=true
fi
if [ -z "$tag" ]; then
    $skip_build && die "--skip-build needs --tag (the image already in ECR)"
    [ -n "$commit" ] || die "not a git checkout: pass --tag"
    tag=$version-$commit
    if $dirty; then
        $allow_dirty || die "the work tree has uncommitted changes: commit them, or pass --allow-dirty"
        tag=$tag-dirty.$(date -u +%Y%m%d%H%M%S)   # ECR tags are immutable
    fi
fi
if $dirty && ! $skip_build && ! $allow_dirty; then
    die "the work tree has uncommitted changes: commit them, or pass --allow-dirty"
fi
[[ $tag =~ ^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$ ]] || die "bad image tag '$tag'"
kiln_version=$version${commit:++$commit}

tf_vars=()
for f in "${var_files[@]}"; do tf_vars+=("-var-file=$f"); done
tf_vars+=("-var" "image_tag=$tag")

log "environment $env_name, image tag $tag$($DRY_RUN && echo ' (dry run)')"

# --- Terraform state of this environment ---
step "terraform state"
if $do_init; then tf_init "$env_name"; fi
check_backend "$env_name"
load_outputs

# --- ECR repository ---
repo=$(out ecr_repository_url)
if [ -z "$repo" ]; then
    $first_deploy || die "terraform has no output ecr_repository_url: the stack is not applied yet.
    For the first deploy pass --first-deploy (docs/OPERATIONS.md, First deploy)."
    step "first deploy: create the ECR repository"
    if $auto_approve; then approve=(-auto-approve); else approve=(); fi
    mutate terraform -chdir="$TF_DIR" apply -input=false "${approve[@]}" \
        -target=aws_ecr_repository.kiln -target=aws_ecr_lifecycle_policy.kiln "${tf_vars[@]}"
    # A targeted apply may leave outputs unset: ask ECR (the repository is
    # named <project>-<environment>, infra/locals.tf).
    if $DRY_RUN; then
        repo="<account>.dkr.ecr.<region>.amazonaws.com/$PROJECT-$env_name"
    else
        repo=$(aws_ ecr describe-repositories --repository-names "$PROJECT-$env_name" --output json |
               jq -r '.repositories[0].repositoryUri // empty')
        [ -n "$repo" ] || die "no ECR repository $PROJECT-$env_name after the targeted apply"
    fi
fi
registry=${repo%%/*}
repo_name=${repo#*/}
if [ -z "$REGION" ]; then
    # <account>.dkr.ecr.<region>.amazonaws.com
    REGION=$(sed -n 's/^[0-9]*\.dkr\.ecr\.\([a-z0-9-]*\)\.amazonaws\.com.*$/\1/p' <<<"$registry")
    if [ -z "$REGION" ] && $DRY_RUN; then REGION="<region>"; fi
    [ -n "$REGION" ] || die "cannot tell the region from '$registry': set AWS_REGION"
fi
image=$repo:$tag
log "image $image"

tag_in_ecr() {
    $DRY_RUN && [ "$repo" != "${repo#<}" ] && return 1
    aws_ ecr describe-images --repository-name "$repo_name" --image-ids "imageTag=$tag" \
        --output json >/dev/null 2>&1
}

# --- 1. build ---
if $skip_build; then
    step "image: using $image from ECR"
    tag_in_ecr || $DRY_RUN || die "tag $tag is not in $repo_name (ECR)"
else
    step "1/6 build $image for $platform"
    if tag_in_ecr; then
        die "$repo_name already has tag $tag (tags are immutable): deploy it with --tag $tag --skip-build"
    fi
    mutate buildah bud --platform "$platform" --format docker --layers \
        --build-arg "BASE=$base" --build-arg "KILN_VERSION=$kiln_version" \
        --label "org.opencontainers.image.revision=${commit:-unknown}" \
        -t "$image" -f Dockerfile .

    # --- 2. push ---
    step "2/6 push to ECR"
    if $DRY_RUN; then
        printf '[dry-run] %s | %s\n' "$(aws_line ecr get-login-password)" \
            "$(quote_cmd buildah login --username AWS --password-stdin "$registry")"
    else
        printf '+ aws ecr get-login-password | buildah login --username AWS --password-stdin %s\n' \
            "$registry" >&2
        aws_ ecr get-login-password | buildah login --username AWS --password-stdin "$registry" >/dev/null
    fi
    mutate buildah push "$image" "docker://$image"
fi

# --- 3. apply: registers the task definition revision of the new image ---
# The service ignores task definition changes in Terraform (service.tf):
# it keeps running the old revision until step 5.
step "3/6 terraform apply (image_tag=$tag)"
# The rotation functions' zips, which the apply uploads (infra/rotation.tf).
$skip_lambdas || mutate make --no-print-directory lambdas LAMBDA_ARCH=arm64
if $auto_approve; then approve=(-auto-approve); else approve=(); fi
if $DRY_RUN; then
    log "what apply would change (terraform plan, read-only):"
    tf plan -input=false -lock=false "${tf_vars[@]}" >&2 || die "terraform plan failed"
    printf '[dry-run] %s\n' "$(quote_cmd terraform -chdir="$TF_DIR" apply -input=false \
        "${approve[@]}" "${tf_vars[@]}")"
else
    mutate terraform -chdir="$TF_DIR" apply -input=false "${approve[@]}" "${tf_vars[@]}"
    load_outputs
fi

# need_out, but a placeholder in a dry run of a first deploy (no outputs yet).
dry_out() {
    local v
    v=$(out "$1")
    if [ -z "$v" ]; then
        $DRY_RUN || die "terraform output '$1' is missing after the apply"
        v="<$1>"
    fi
    printf '%s' "$v"
}
cluster=$(dry_out ecs_cluster_name)
service=$(dry_out ecs_service_name)
container=$(out container_name); container=${container:-kiln}
log_group=$(out app_log_group_name)
if $DRY_RUN; then
    td_arn="<task definition revision registered by terraform apply>"
else
    td_arn=$(need_out task_definition_arn)
    td_image=$(aws_ ecs describe-task-definition --task-definition "$td_arn" --output json |
        jq -r --arg c "$container" '.taskDefinition.containerDefinitions[] | select(.name == $c) | .image')
    [ "$td_image" = "$image" ] ||
        die "task definition $td_arn runs '$td_image', not $image: did the apply go through?"
    log "task definition $td_arn"
fi

# --- 4. migrations, as a one-off task of the new revision ---
if $skip_migrate; then
    step "4/6 migrations: skipped (--skip-migrate)"
else
    step "4/6 migrations: kiln migrate as a one-off task"
    overrides=$(out migration_task_overrides)
    [ -n "$overrides" ] ||
        overrides=$(jq -cn --arg c "$container" '{containerOverrides: [{name: $c, command: ["migrate"]}]}')
    netcfg=$(out run_task_network_configuration)
    if [ -z "$netcfg" ]; then
        netcfg=$(aws_ ecs describe-services --cluster "$cluster" --services "$service" --output json |
                 jq -c '.services[0].networkConfiguration // empty')
        [ -n "$netcfg" ] || die "no network configuration for the migration task"
    fi
    run_task=(ecs run-task --cluster "$cluster" --task-definition "$td_arn"
              --launch-type FARGATE --count 1 --started-by kiln-deploy
              --network-configuration "$netcfg" --overrides "$overrides" --output json)
    if $DRY_RUN; then
        printf '[dry-run] %s\n' "$(aws_line "${run_task[@]}")"
        printf '[dry-run] %s\n' "$(aws_line ecs wait tasks-stopped --cluster "$cluster" \
            --tasks '<migration task>')"
        log "[dry-run] then: fail unless the container '$container' exited 0"
    else
        printf '+ %s\n' "$(aws_line "${run_task[@]}")" >&2
        started=$(aws_ "${run_task[@]}") || die "run-task failed; the service was not changed"
        task_arn=$(jq -r '.tasks[0].taskArn // empty' <<<"$started")
        [ -n "$task_arn" ] || die "the migration task did not start: $(jq -c '.failures' <<<"$started"); the service was not changed"
        log "migration task $task_arn"
        deadline=$(( $(date +%s) + wait_minutes * 60 ))
        # The waiter gives up after 10 minutes; ask again until our deadline.
        until aws_ ecs wait tasks-stopped --cluster "$cluster" --tasks "$task_arn"; do
            [ "$(date +%s)" -lt "$deadline" ] ||
                die "the migration task has not stopped after $wait_minutes minutes ($task_arn); the service was not changed"
        done
        stopped=$(aws_ ecs describe-tasks --cluster "$cluster" --tasks "$task_arn" --output json)
        code=$(jq -r --arg c "$container" '.tasks[0].containers[] | select(.name == $c) | .exitCode // "none"' <<<"$stopped")
        if [ "$code" != 0 ]; then
            reason=$(jq -r --arg c "$container" '[.tasks[0].stoppedReason, (.tasks[0].containers[] | select(.name == $c) | .reason)] | map(select(. != null)) | join("; ")' <<<"$stopped")
            if [ -n "$log_group" ]; then
                stream=kiln/$container/${task_arn##*/}
                log "last lines of $log_group $stream:"
                aws_ logs get-log-events --log-group-name "$log_group" --log-stream-name "$stream" \
                    --limit 40 --output json 2>/dev/null | jq -r '.events[].message' >&2 || true
            fi
            die "migrations failed: exit code $code${reason:+ ($reason)}; the service still runs the previous revision"
        fi
        log "migrations: done (exit 0)"
    fi
fi

# --- 5. move the service to the new revision ---
step "5/6 update the service"
mutate_aws ecs update-service --cluster "$cluster" --service "$service" \
    --task-definition "$td_arn" --output json

# --- 6. wait for a stable service; a circuit-breaker rollback is a failure ---
step "6/6 wait for the service to be stable"
if $DRY_RUN; then
    printf '[dry-run] %s\n' "$(aws_line ecs wait services-stable --cluster "$cluster" \
        --services "$service")"
else
    deadline=$(( $(date +%s) + wait_minutes * 60 ))
    until aws_ ecs wait services-stable --cluster "$cluster" --services "$service"; do
        [ "$(date +%s)" -lt "$deadline" ] ||
            die "the service is not stable after $wait_minutes minutes (scripts/health-report.sh --env $env_name)"
    done
    svc=$(aws_ ecs describe-services --cluster "$cluster" --services "$service" --output json)
    now_td=$(jq -r '.services[0].taskDefinition' <<<"$svc")
    rollout=$(jq -r '.services[0].deployments[] | select(.status == "PRIMARY") | .rolloutState // "?"' <<<"$svc")
    if [ "$now_td" != "$td_arn" ] || [ "$rollout" = FAILED ]; then
        why=$(jq -r '[.services[0].deployments[] | select(.rolloutState == "FAILED") | .rolloutStateReason] | first // ""' <<<"$svc")
        die "the deployment was rolled back by the circuit breaker${why:+: $why}; the service runs $now_td"
    fi
    log "deployed $image: the service runs $td_arn"
fi

# --- health report ---
rc=0
if $report; then
    step "health report"
    scripts/health-report.sh --env "$env_name" --no-backend-check --cluster "$cluster" \
        --service "$service" --url "$(out public_url)" --alarm-prefix "$cluster-" \
        --alarm-topic "$(out alarm_topic_arn)" || rc=$?
fi
if $DRY_RUN; then
    log "dry run: nothing was changed"
elif [ $rc != 0 ]; then
    warn "deployed $tag to $env_name, but the health report found problems"
    exit 3
else
    log "deployed $tag to $env_name"
fi
