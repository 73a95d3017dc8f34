# Secrets Kiln, the proxy and the rotation functions read, all under the
# data key. First values come from ephemeral random passwords written with
# write-only arguments (secret_string_wo): they never reach Terraform state
# or this repository. The rotation functions (rotation.tf) replace them at
# once and on schedule. OAuth credentials are created outside Terraform and
# passed in by ARN (variables.tf).
#
# The first version of a rotated secret keeps a label of its own
# (local.initial_version_stage): after two rotations it would otherwise
# lose every label, Secrets Manager would eventually delete it, the
# provider would drop it from state, and the next apply would write the
# stale first value back as AWSCURRENT. Terraform ignores how the rotation
# moves the AWS labels.

locals {
  initial_version_stage = "TERRAFORM_INITIAL"
}

ephemeral "random_password" "secret_key_base" {
  length  = 86 # 64 bytes of entropy in base64url's alphabet; Kiln wants >= 64
  special = false
}

ephemeral "random_password" "db_master" {
  length  = 40
  special = false # no quoting trouble in libpq connection strings
}

ephemeral "random_password" "db_app" {
  length  = 40
  special = false
}

resource "aws_secretsmanager_secret" "secret_key_base" {
  name                    = "${local.name}/secret-key-base"
  description             = "Kiln SECRET_KEY_BASE (plain string); rotation keeps the previous value verifying"
  kms_key_id              = aws_kms_key.data.arn
  recovery_window_in_days = var.secret_recovery_window_days
}

resource "aws_secretsmanager_secret_version" "secret_key_base_initial" {
  secret_id                = aws_secretsmanager_secret.secret_key_base.id
  secret_string_wo         = ephemeral.random_password.secret_key_base.result
  secret_string_wo_version = 1
  version_stages           = ["AWSCURRENT", local.initial_version_stage]

  lifecycle {
    ignore_changes = [version_stages]
  }
}

# The Aurora master user, in the RDS secret format the DB rotation function
# logs in with (host included: it checks the master and app secrets name
# the same cluster). Not used by Kiln. Bump db_master_password_version to
# set a new master password on the cluster and here in one apply.
resource "aws_secretsmanager_secret" "db_master" {
  name                    = "${local.name}/db-master"
  description             = "Aurora master user (used only by the DB user rotation function)"
  kms_key_id              = aws_kms_key.data.arn
  recovery_window_in_days = var.secret_recovery_window_days
}

resource "aws_secretsmanager_secret_version" "db_master" {
  secret_id = aws_secretsmanager_secret.db_master.id
  secret_string_wo = jsonencode({
    engine   = "postgres"
    host     = aws_rds_cluster.main.endpoint
    port     = local.db_port
    dbname   = var.db_name
    username = var.db_master_username
    password = ephemeral.random_password.db_master.result
  })
  secret_string_wo_version = var.db_master_password_version
}

# The database app user, in the RDS rotation format. The rotation function
# alternates `username` between local.db_users; RDS Proxy logs in to Aurora
# with whatever the current version holds, and Kiln reads the username from
# it (DB_USERNAME_SECRET_ARN=<arn>#username) to sign its IAM tokens.
resource "aws_secretsmanager_secret" "db_app" {
  name                    = "${local.name}/db-app-user"
  description             = "Aurora app user for RDS Proxy (alternating ${local.db_users[0]}/${local.db_users[1]})"
  kms_key_id              = aws_kms_key.data.arn
  recovery_window_in_days = var.secret_recovery_window_days
}

resource "aws_secretsmanager_secret_version" "db_app_initial" {
  secret_id = aws_secretsmanager_secret.db_app.id
  secret_string_wo = jsonencode({
    engine   = "postgres"
    host     = aws_rds_cluster.main.endpoint
    port     = local.db_port
    dbname   = var.db_name
    username = local.db_users[0]
    password = ephemeral.random_password.db_app.result
  })
  secret_string_wo_version = 1
  version_stages           = ["AWSCURRENT", local.initial_version_stage]

  lifecycle {
    ignore_changes = [version_stages]
  }
}

# The Valkey break-glass user (cache.tf). Kiln itself uses IAM and no
# password. ElastiCache users take their first password only in plain
# arguments, so this one value is in state; the first rotation replaces it
# when the schedule is created.
resource "aws_secretsmanager_secret" "valkey_ops" {
  name                    = "${local.name}/valkey-ops-user"
  description             = "Valkey break-glass user (read-only), rotated with ModifyUser"
  kms_key_id              = aws_kms_key.data.arn
  recovery_window_in_days = var.secret_recovery_window_days
}

resource "aws_secretsmanager_secret_version" "valkey_ops_initial" {
  secret_id = aws_secretsmanager_secret.valkey_ops.id
  secret_string = jsonencode({
    username = aws_elasticache_user.ops.user_name
    password = random_password.valkey_ops_initial.result
  })
  version_stages = ["AWSCURRENT", local.initial_version_stage]

  lifecycle {
    # The rotation function owns the value from now on.
    ignore_changes = [secret_string, version_stages]
  }
}
