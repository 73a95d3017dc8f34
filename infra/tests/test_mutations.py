"""Each key property, broken on purpose in a copy of infra/, is reported by
its check: proof that the checks in test_policy.py can fail.

A mutation replaces text in one file of the copy (or appends a block),
the copy is parsed again (only the changed file reaches hcl2json; the others
come from the parse cache) and the named check must now report a violation,
whose text must contain `expect` when given.
"""

import os
import shutil

import pytest

import hcl
import policy


class Mutation:
    def __init__(self, id, file, old, new, check, expect=None, count=1):
        self.id = id
        self.file = file
        self.old = old  # None: append `new` to the file
        self.new = new
        self.check = check
        self.expect = expect
        self.count = count  # occurrences to replace (0: all)


M = Mutation
MUTATIONS = [
    # --- the original's mistakes ---
    M("proxy-name-in-rds-connect", "data.tf",
      "element(split(\":\", aws_db_proxy.main.arn), 6)", "aws_db_proxy.main.name",
      "rds_connect_uses_proxy_resource_id", "resource id"),
    M("proxy-id-element-5", "data.tf",
      "element(split(\":\", aws_db_proxy.main.arn), 6)", "element(split(\":\", aws_db_proxy.main.arn), 5)",
      "rds_connect_uses_proxy_resource_id", "resource id"),
    M("elasticache-connect-without-user", "iam.tf",
      "      aws_elasticache_user.app.arn,\n", "",
      "elasticache_connect_covers_cache_and_user", "ElastiCache user"),
    M("elasticache-connect-without-cache", "iam.tf",
      "      aws_elasticache_serverless_cache.main.arn,\n", "",
      "elasticache_connect_covers_cache_and_user", "serverless cache"),
    M("budget-filter-double-dollar", "budget.tf",
      'format("user:Project$%s", var.project)', '"user:Project$${var.project}"',
      "budget_filter_interpolates_project", "$${"),
    M("budget-filter-wrong-tag", "budget.tf",
      'format("user:Project$%s", var.project)', 'format("user:Project%s", var.project)',
      "budget_filter_interpolates_project", "expected"),
    M("sns-key-without-cloudwatch", "kms.tf",
      '        "cloudwatch.amazonaws.com",\n', "",
      "sns_topic_encrypted_and_cloudwatch_can_use_key", "cloudwatch.amazonaws.com"),
    M("sns-key-without-generate-data-key", "kms.tf",
      'actions   = ["kms:Decrypt", "kms:GenerateDataKey*"]', 'actions   = ["kms:Decrypt"]',
      "sns_topic_encrypted_and_cloudwatch_can_use_key", "GenerateDataKey"),
    M("sns-topic-unencrypted", "observability.tf",
      "  kms_master_key_id = aws_kms_key.alarms.arn\n", "",
      "sns_topic_encrypted_and_cloudwatch_can_use_key"),
    M("no-email-subscription", "observability.tf",
      '  protocol  = "email"', '  protocol  = "https"',
      "alarm_email_subscription_optional", "no e-mail subscription"),
    M("email-subscription-not-optional", "observability.tf",
      "  count = var.alarm_email != null ? 1 : 0\n\n  topic_arn", "  topic_arn",
      "alarm_email_subscription_optional", "optional"),
    M("alb-logs-kms", "edge.tf",
      '      sse_algorithm = "AES256"', '      sse_algorithm     = "aws:kms"\n      kms_master_key_id = aws_kms_key.data.arn',
      "alb_access_logs_bucket_sse_s3", "AES256"),
    M("alb-logs-without-elb-account", "edge.tf",
      "      identifiers = [data.aws_elb_service_account.current.arn]", '      identifiers = ["arn:aws:iam::123456789012:root"]',
      "alb_logs_bucket_policy_elb_delivery", "aws_elb_service_account"),
    M("state-bucket-name-drifts", "state-backend/main.tf",
      'state_bucket_name = "${var.project}-tfstate-', 'state_bucket_name = "${var.project}-state-',
      "state_backend_names_match_backend_config", "bucket"),
    M("lock-table-name-drifts", "state-backend/main.tf",
      'lock_table_name   = "${var.project}-tfstate-lock"', 'lock_table_name   = "${var.project}-locks"',
      "state_backend_names_match_backend_config", "dynamodb_table"),
    M("backend-hardcodes-bucket", "backend.tf",
      "    encrypt = true\n", '    encrypt = true\n    bucket  = "kiln-tfstate"\n',
      "state_backend_names_match_backend_config", "hard-codes"),
    M("create-if-missing-bucket", "uploads.tf", None,
      '\ndata "aws_s3_bucket" "uploads_existing" {\n  bucket = "${local.short_name}-uploads-${local.bucket_suffix}"\n}\n',
      "no_create_if_missing_data_sources", "create-if-missing"),
    M("create-if-missing-role-fallback", "iam.tf", None,
      '\ndata "aws_iam_role" "existing_task" {\n  name = "${local.name}-task"\n}\n\n'
      'locals {\n  task_role_arn = try(data.aws_iam_role.existing_task.arn, aws_iam_role.task.arn)\n}\n',
      "no_create_if_missing_data_sources"),
    # --- network ---
    M("tasks-public-ingress", "network.tf", None,
      '\nresource "aws_vpc_security_group_ingress_rule" "tasks_debug" {\n'
      '  security_group_id = aws_security_group.tasks.id\n  ip_protocol       = "tcp"\n'
      '  from_port         = 8443\n  to_port           = 8443\n  cidr_ipv4         = "0.0.0.0/0"\n}\n',
      "no_public_ingress_except_alb", "not the ALB"),
    M("aurora-ipv6-public-ingress", "network.tf", None,
      '\nresource "aws_security_group_rule" "aurora_any" {\n  type              = "ingress"\n'
      '  security_group_id = aws_security_group.aurora.id\n  protocol          = "tcp"\n'
      '  from_port         = 5432\n  to_port           = 5432\n  ipv6_cidr_blocks  = ["::/0"]\n}\n',
      "no_public_ingress_except_alb"),
    M("alb-public-ssh", "network.tf",
      '  from_port         = 80\n  to_port           = 80\n', '  from_port         = 22\n  to_port           = 22\n',
      "no_public_ingress_except_alb", "ports"),
    M("tasks-admit-valkey-sg", "network.tf",
      "  description                  = \"HTTPS from the ALB\"\n  ip_protocol                  = \"tcp\"\n"
      "  from_port                    = local.container_port\n  to_port                      = local.container_port\n"
      "  referenced_security_group_id = aws_security_group.alb.id",
      "  description                  = \"HTTPS from the ALB\"\n  ip_protocol                  = \"tcp\"\n"
      "  from_port                    = local.container_port\n  to_port                      = local.container_port\n"
      "  referenced_security_group_id = aws_security_group.valkey.id",
      "security_group_tiers"),
    M("valkey-wrong-port", "network.tf",
      'resource "aws_vpc_security_group_ingress_rule" "valkey_from_tasks" {\n'
      '  security_group_id            = aws_security_group.valkey.id\n'
      '  description                  = "Valkey from the tasks"\n  ip_protocol                  = "tcp"\n'
      '  from_port                    = 6379',
      'resource "aws_vpc_security_group_ingress_rule" "valkey_from_tasks" {\n'
      '  security_group_id            = aws_security_group.valkey.id\n'
      '  description                  = "Valkey from the tasks"\n  ip_protocol                  = "tcp"\n'
      '  from_port                    = 6380',
      "security_group_tiers", "6379"),
    M("single-nat-fixed", "network.tf",
      "resource \"aws_nat_gateway\" \"main\" {\n  count = local.nat_count",
      "resource \"aws_nat_gateway\" \"main\" {\n  count = 1",
      "nat_gateway_per_az"),
    M("no-sts-endpoint", "network.tf",
      '"logs", "secretsmanager", "sts"]', '"logs", "secretsmanager"]',
      "vpc_endpoints", "sts"),
    M("endpoint-without-private-dns", "network.tf",
      "private_dns_enabled = true", "private_dns_enabled = false",
      "vpc_endpoints", "private DNS"),
    M("flow-log-group-unencrypted", "network.tf",
      "  retention_in_days = var.flow_log_retention_days\n  kms_key_id        = aws_kms_key.logs.arn\n",
      "  retention_in_days = var.flow_log_retention_days\n",
      "flow_logs_to_encrypted_log_group"),
    M("proxy-in-public-subnets", "data.tf",
      "  vpc_subnet_ids         = aws_subnet.private[*].id", "  vpc_subnet_ids         = aws_subnet.public[*].id",
      "private_tiers_in_private_subnets", "RDS Proxy"),
    # --- edge ---
    M("no-drop-invalid-headers", "edge.tf",
      "  drop_invalid_header_fields = true\n", "",
      "alb_drops_invalid_headers"),
    M("old-tls-policy", "variables.tf",
      'default     = "ELBSecurityPolicy-TLS13-1-2-2021-06"', 'default     = "ELBSecurityPolicy-2016-08"',
      "alb_tls13_policy"),
    M("http-forwards", "edge.tf",
      'status_code = "HTTP_301"', 'status_code = "HTTP_302"',
      "alb_http_redirects_to_https"),
    M("ga-without-client-ip", "edge.tf",
      "client_ip_preservation_enabled = true", "client_ip_preservation_enabled = false",
      "global_accelerator_optional_with_client_ip_preservation", "client_ip_preservation"),
    M("bucket-public-acls", "uploads.tf",
      "  block_public_acls       = true\n", "  block_public_acls       = false\n",
      "s3_buckets_block_public_access", "uploads"),
    # --- service ---
    M("container-root", "service.tf",
      'user                   = "10001:10001"', 'user                   = "0:0"',
      "container_runs_as_non_root"),
    M("container-writable-root", "service.tf",
      "readonlyRootFilesystem = true", "readonlyRootFilesystem = false",
      "container_read_only_root"),
    M("x86-task", "service.tf",
      'cpu_architecture        = "ARM64"', 'cpu_architecture        = "X86_64"',
      "fargate_arm64"),
    M("no-container-insights", "service.tf",
      '    value = "enabled"', '    value = "disabled"',
      "ecs_container_insights"),
    M("env-plain-http", "locals.tf",
      'SSL_SELF_SIGNED          = "true"', 'SSL_SELF_SIGNED          = "false"',
      "container_environment", "SSL_SELF_SIGNED"),
    M("env-db-password", "locals.tf",
      'DB_IAM_AUTH            = "true"', 'DB_IAM_AUTH            = "true"\n    DB_PASSWORD            = "hunter2"',
      "container_environment", "DB_PASSWORD"),
    M("env-direct-aurora", "locals.tf",
      "DB_HOST                = aws_db_proxy.main.endpoint", "DB_HOST                = aws_rds_cluster.main.endpoint",
      "container_environment", "RDS Proxy"),
    M("task-role-reads-every-secret", "iam.tf",
      "    resources = local.app_secret_resource_arns", '    resources = ["*"]',
      "task_role_reads_exactly_app_secrets"),
    M("task-role-reads-extra-secret", "iam.tf",
      "    resources = local.app_secret_resource_arns",
      "    resources = concat(local.app_secret_resource_arns, [aws_secretsmanager_secret.valkey_ops.arn])",
      "task_role_reads_exactly_app_secrets", "does not use"),
    M("healthcheck-wrong-command", "service.tf",
      'command     = ["CMD", "/usr/local/bin/kiln", "healthcheck"]', 'command     = ["CMD-SHELL", "curl -f http://localhost:8443/healthz"]',
      "container_healthcheck_liveness"),
    M("target-group-http", "edge.tf",
      '  protocol         = "HTTPS"\n  protocol_version = "HTTP1"', '  protocol         = "HTTP"\n  protocol_version = "HTTP1"',
      "target_group_https_readyz"),
    M("health-check-healthz", "edge.tf",
      'path                = "/readyz"', 'path                = "/healthz"',
      "target_group_https_readyz"),
    M("no-rollback", "service.tf",
      "    rollback = true", "    rollback = false",
      "deployment_circuit_breaker_rollback"),
    M("stop-timeout-below-drain", "variables.tf",
      "  default     = 40\n", "  default     = 20\n",
      "stop_timeout_above_drain", "stopTimeout"),
    M("deregistration-shorter-than-drain", "edge.tf",
      "  deregistration_delay = var.deregistration_delay", "  deregistration_delay = 5",
      "stop_timeout_above_drain", "deregistration_delay"),
    M("no-request-scaling", "service.tf",
      'predefined_metric_type = "ALBRequestCountPerTarget"', 'predefined_metric_type = "ECSServiceAverageMemoryUtilization"',
      "autoscaling_cpu_and_requests", "ALBRequestCountPerTarget"),
    M("uploads-whole-bucket", "iam.tf",
      '    resources = ["${aws_s3_bucket.uploads.arn}/users/*"]', '    resources = ["${aws_s3_bucket.uploads.arn}/*"]',
      "task_role_uploads_scoped", "users/*"),
    M("uploads-list-without-prefix", "iam.tf",
      '      variable = "s3:prefix"', '      variable = "s3:delimiter"',
      "task_role_uploads_scoped", "s3:prefix"),
    M("uploads-cors-any-origin", "uploads.tf",
      "allowed_origins = concat([local.public_url], var.uploads_extra_cors_origins)", 'allowed_origins = ["*"]',
      "uploads_bucket_private_encrypted_versioned_cors", "never"),
    M("ecr-mutable", "service.tf",
      'image_tag_mutability = "IMMUTABLE"', 'image_tag_mutability = "MUTABLE"',
      "ecr_repository_hardened"),
    # --- data ---
    M("aurora-unencrypted", "data.tf",
      "  storage_encrypted = true\n", "  storage_encrypted = false\n",
      "aurora_encrypted_with_cmk"),
    M("aurora-no-deletion-protection", "variables.tf",
      'Turn off only to destroy the environment."\n  default     = true', 'Turn off only to destroy the environment."\n  default     = false',
      "aurora_protected", "deletion_protection"),
    M("aurora-public", "data.tf",
      "  publicly_accessible = false\n", "  publicly_accessible = true\n",
      "aurora_private", "publicly_accessible", count=0),
    M("aurora-same-az", "data.tf",
      "  availability_zone   = local.azs[1]", "  availability_zone   = local.azs[0]",
      "aurora_instances_in_different_azs"),
    M("aurora-no-force-ssl", "data.tf",
      '    name         = "rds.force_ssl"\n    value        = "1"', '    name         = "rds.force_ssl"\n    value        = "0"',
      "aurora_iam_auth_and_force_ssl", "rds.force_ssl"),
    M("aurora-no-iam-auth", "data.tf",
      "  iam_database_authentication_enabled = true", "  iam_database_authentication_enabled = false",
      "aurora_iam_auth_and_force_ssl"),
    M("proxy-without-tls", "data.tf",
      "  require_tls         = true", "  require_tls         = false",
      "rds_proxy_tls_and_iam", "require_tls"),
    M("proxy-iam-optional", "data.tf",
      'iam_auth                  = "REQUIRED"', 'iam_auth                  = "DISABLED"',
      "rds_proxy_tls_and_iam", "iam_auth"),
    M("valkey-default-user-on", "cache.tf",
      'access_string = "off ~* -@all"', 'access_string = "on ~* +@all"',
      "valkey_default_user_disabled", "off"),
    M("valkey-app-user-password", "cache.tf",
      "  authentication_mode {\n    type = \"iam\"\n  }", "  authentication_mode {\n    type      = \"password\"\n    passwords = [\"x\"]\n  }",
      "valkey_app_user_iam", "iam"),
    M("valkey-app-user-id-differs", "cache.tf",
      "  user_id   = local.valkey_app_user\n", "  user_id   = \"${local.valkey_app_user}-id\"\n",
      "valkey_app_user_iam", "user_id == user_name"),
    M("valkey-unencrypted", "cache.tf",
      "  kms_key_id         = aws_kms_key.data.arn\n", "",
      "valkey_serverless_encrypted_private"),
    # --- secrets, rotation ---
    M("secret-without-cmk", "secrets.tf",
      'name                    = "${local.name}/secret-key-base"\n  description             = "Kiln SECRET_KEY_BASE (plain string); rotation keeps the previous value verifying"\n  kms_key_id              = aws_kms_key.data.arn\n',
      'name                    = "${local.name}/secret-key-base"\n  description             = "Kiln SECRET_KEY_BASE (plain string); rotation keeps the previous value verifying"\n',
      "secrets_encrypted_with_cmk", "secret_key_base"),
    M("oauth-secret-value-variable", "variables.tf", None,
      '\nvariable "google_client_secret" {\n  type        = string\n  description = "Google client secret."\n  sensitive   = true\n  default     = null\n}\n',
      "oauth_secrets_by_arn_only", "google_client_secret"),
    M("secret-not-rotated", "secrets.tf", None,
      '\nresource "aws_secretsmanager_secret" "unrotated" {\n  name       = "${local.name}/unrotated"\n  kms_key_id = aws_kms_key.data.arn\n}\n',
      "rotation_schedules_wired", "never rotated"),
    M("master-password-in-state", "data.tf",
      "  master_password_wo         = ephemeral.random_password.db_master.result\n  master_password_wo_version = var.db_master_password_version\n",
      "  master_password            = random_password.db_master.result\n",
      "no_secret_values_in_state", "master_password"),
    M("secret-value-in-state", "secrets.tf",
      "  secret_string_wo         = ephemeral.random_password.secret_key_base.result\n  secret_string_wo_version = 1\n",
      "  secret_string = random_password.skb.result\n",
      "no_secret_values_in_state", "random_password.skb"),
    M("db-users-not-the-rotation-function-s", "locals.tf",
      'db_users = [var.db_app_username, "${var.db_app_username}_clone"]',
      'db_users = ["${var.db_app_username}_a", "${var.db_app_username}_b"]',
      "db_app_secret_rds_format", "_clone"),
    M("db-rotation-without-master", "rotation.tf",
      "      MASTER_SECRET_ARN = aws_secretsmanager_secret.db_master.arn\n", "",
      "rotation_lambdas_configured", "MASTER_SECRET_ARN"),
    M("lambda-zip-name", "rotation.tf",
      'filename         = "${var.lambda_artifacts_dir}/rotate-${each.key}.zip"',
      'filename         = "${var.lambda_artifacts_dir}/${each.key}.zip"',
      "rotation_lambdas_configured", "make lambdas"),
    M("hot-reload-mismatch", "rotation.tf",
      "    HOT_RELOAD = tostring(var.enable_secret_reload)", '    HOT_RELOAD = "false"',
      "rotation_lambdas_configured", "HOT_RELOAD"),
    M("initial-version-orphaned", "secrets.tf",
      '  version_stages           = ["AWSCURRENT", local.initial_version_stage]\n\n  lifecycle {\n    ignore_changes = [version_stages]\n  }\n}\n\n# The Aurora master',
      '}\n\n# The Aurora master',
      "initial_versions_survive_rotation", "secret_key_base_initial"),
    M("master-secret-without-host", "secrets.tf",
      "    host     = aws_rds_cluster.main.endpoint\n    port     = local.db_port\n    dbname   = var.db_name\n    username = var.db_master_username",
      "    port     = local.db_port\n    dbname   = var.db_name\n    username = var.db_master_username",
      "db_master_secret_rds_format", "host"),
    M("lambda-x86", "rotation.tf",
      'architectures = ["arm64"]', 'architectures = ["x86_64"]',
      "rotation_lambdas_configured", "arm64"),
    M("lambda-without-permission", "rotation.tf",
      '  principal      = "secretsmanager.amazonaws.com"', '  principal      = "events.amazonaws.com"',
      "rotation_lambdas_configured", "secretsmanager.amazonaws.com"),
    M("rotation-redeploys-any-service", "iam.tf",
      "    resources = [local.service_arn]", '    resources = ["*"]',
      "rotation_iam_least_privilege", "ecs:UpdateService"),
    M("valkey-rotation-cannot-modify-user", "iam.tf",
      'actions   = ["elasticache:ModifyUser", "elasticache:DescribeUsers"]', 'actions   = ["elasticache:DescribeUsers"]',
      "rotation_iam_least_privilege", "ModifyUser"),
    # --- observability, backup ---
    M("trail-single-region", "observability.tf",
      "is_multi_region_trail         = true", "is_multi_region_trail         = false",
      "cloudtrail_multi_region_validated_encrypted"),
    M("trail-no-validation", "observability.tf",
      "enable_log_file_validation    = true", "enable_log_file_validation    = false",
      "cloudtrail_multi_region_validated_encrypted"),
    M("log-group-without-retention", "service.tf",
      '  name              = "/ecs/${local.name}/kiln"\n  retention_in_days = var.log_retention_days\n',
      '  name              = "/ecs/${local.name}/kiln"\n',
      "log_groups_retention_and_kms", "retention"),
    M("log-group-without-kms", "rotation.tf",
      "  retention_in_days = var.log_retention_days\n  kms_key_id        = aws_kms_key.logs.arn\n",
      "  retention_in_days = var.log_retention_days\n",
      "log_groups_retention_and_kms", "customer managed key"),
    M("no-unhealthy-host-alarm", "observability.tf",
      'metric_name         = "UnHealthyHostCount"', 'metric_name         = "HealthyHostCount"',
      "alarms_cover_required_metrics", "unhealthy"),
    M("alarm-to-nobody", "observability.tf",
      "  alarm_actions = [aws_sns_topic.alarms.arn]", "  alarm_actions = []",
      "alarms_notify_sns"),
    M("backup-short-yearly", "variables.tf",
      'description = "Days yearly recovery points are kept (2557 = 7 years)."\n  default     = 2557',
      'description = "Days yearly recovery points are kept (2557 = 7 years)."\n  default     = 400',
      "backup_plan_rules_retention", "yearly"),
    M("backup-copy-not-optional", "backup.tf",
      "for_each = var.backup_copy_vault_arn != null ? [var.backup_copy_vault_arn] : []",
      'for_each = ["arn:aws:backup:eu-central-1:123456789012:backup-vault:dr"]',
      "backup_cross_region_copy_optional", None, count=0),
    M("deploy-output-renamed", "outputs.tf",
      'output "ecs_service_name" {', 'output "service_name" {',
      "deploy_outputs", "ecs_service_name"),
    M("alarm-name-without-prefix", "observability.tf",
      'alarm_name          = "${local.name}-alb-5xx"', 'alarm_name          = "alb-5xx-${local.name}"',
      "alarm_names_prefixed_by_cluster", "alb_5xx"),
    # --- hygiene ---
    M("variable-without-description", "variables.tf",
      '  description = "Availability zones to span (2 or 3). Aurora\'s writer and reader go to the first two."\n', "",
      "variables_typed_and_described", "az_count"),
    M("variable-without-type", "variables.tf",
      'variable "log_level" {\n  type        = string\n', 'variable "log_level" {\n',
      "variables_typed_and_described", "log_level"),
    M("output-without-description", "outputs.tf",
      '  description = "ECR repository to push the Kiln image to (tags are immutable)."\n', "",
      "outputs_described", "ecr_repository_url"),
    M("provider-without-default-tags", "providers.tf",
      "  default_tags {\n    tags = merge(var.extra_tags, {\n      Project     = var.project\n      Environment = var.environment\n      ManagedBy   = \"terraform\"\n    })\n  }\n",
      "", "default_tags_on_every_provider", "default_tags"),
    M("aliased-provider-without-default-tags", "providers.tf", None,
      '\nprovider "aws" {\n  alias  = "us_east_1"\n  region = "us-east-1"\n}\n',
      "default_tags_on_every_provider", "us_east_1"),
    M("long-alb-name", "edge.tf",
      'name               = "${local.short_name}-alb"', 'name               = "${local.name}-alb"',
      "names_within_aws_limits", "aws_lb.main.name"),
    M("long-environment-allowed", "variables.tf",
      '^[a-z][a-z0-9-]{0,19}$", var.environment', '^[a-z][a-z0-9-]{0,29}$", var.environment',
      "names_within_aws_limits", "limit"),
    M("upper-case-bucket", "uploads.tf",
      'bucket = "${local.short_name}-uploads-${local.bucket_suffix}"', 'bucket = "${local.short_name}-Uploads-${local.bucket_suffix}"',
      "names_within_aws_limits", "aws_s3_bucket.uploads"),
    M("bucket-name-without-account", "uploads.tf",
      'bucket = "${local.short_name}-uploads-${local.bucket_suffix}"', 'bucket = "${local.short_name}-uploads"',
      "bucket_names_unique_per_account_region", "account id"),
    M("key-without-rotation", "kms.tf",
      "  description             = \"${local.name}: data at rest\"\n  enable_key_rotation     = true",
      "  description             = \"${local.name}: data at rest\"\n  enable_key_rotation     = false",
      "kms_keys_rotate", "aws_kms_key.data"),
    M("state-lock-table-provisioned", "state-backend/main.tf",
      'billing_mode                = "PAY_PER_REQUEST"', 'billing_mode                = "PROVISIONED"',
      "state_backend_hardened", "PAY_PER_REQUEST"),
]


def _copy(tmp_path):
    dst = tmp_path / "infra"
    shutil.copytree(hcl.INFRA, dst, ignore=shutil.ignore_patterns("tests", "lambdas", ".terraform", "node_modules"))
    return dst


def _apply(root, mut):
    path = os.path.join(root, mut.file)
    with open(path, encoding="utf-8") as f:
        text = f.read()
    if mut.old is None:
        text += mut.new
    else:
        n = text.count(mut.old)
        assert n >= 1, f"mutation {mut.id}: {mut.old!r} not found in {mut.file} (update the mutation)"
        if mut.count:
            assert n == mut.count, f"mutation {mut.id}: {mut.old!r} occurs {n} times in {mut.file}"
            text = text.replace(mut.old, mut.new, mut.count)
        else:
            text = text.replace(mut.old, mut.new)
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)


def test_every_mutation_names_a_check():
    ids = [m.id for m in MUTATIONS]
    assert len(ids) == len(set(ids)), "duplicate mutation ids"
    for m in MUTATIONS:
        assert m.check in policy.CHECKS, f"{m.id}: no check {m.check}"


@pytest.mark.parametrize("mut", MUTATIONS, ids=[m.id for m in MUTATIONS])
def test_mutation_is_caught(mut, tree, tmp_path):
    check = policy.CHECKS[mut.check]
    assert not check(tree), f"{mut.check} already fails on infra/ itself"
    root = _copy(tmp_path)
    _apply(root, mut)
    broken = hcl.load(root, repo=os.path.dirname(hcl.INFRA))
    assert not broken.errors, f"mutation {mut.id} does not parse: {broken.errors}"
    violations = check(broken)
    assert violations, f"{mut.check} did not notice mutation {mut.id}"
    if mut.expect:
        assert any(mut.expect in v for v in violations), \
            f"{mut.check} reported {violations}, none mentioning {mut.expect!r}"
