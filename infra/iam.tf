# IAM roles. Every trust policy names the one service that assumes the role
# and, where the service passes it, this account (confused deputy).

data "aws_iam_policy_document" "ecs_tasks_trust" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["ecs-tasks.amazonaws.com"]
    }
    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [local.account_id]
    }
    condition {
      test     = "ArnLike"
      variable = "aws:SourceArn"
      values   = ["arn:${local.partition}:ecs:${local.region}:${local.account_id}:*"]
    }
  }
}

# --- Task execution role: what ECS itself needs to start the task ---

resource "aws_iam_role" "task_execution" {
  name               = "${local.name}-task-execution"
  description        = "ECS agent for ${local.name}: pull the image, write logs"
  assume_role_policy = data.aws_iam_policy_document.ecs_tasks_trust.json
}

data "aws_iam_policy_document" "task_execution" {
  statement {
    sid       = "EcrAuth"
    actions   = ["ecr:GetAuthorizationToken"]
    resources = ["*"] # the action has no resource
  }

  statement {
    sid = "EcrPull"
    actions = [
      "ecr:BatchCheckLayerAvailability",
      "ecr:BatchGetImage",
      "ecr:GetDownloadUrlForLayer",
    ]
    resources = [aws_ecr_repository.kiln.arn]
  }

  statement {
    sid       = "Logs"
    actions   = ["logs:CreateLogStream", "logs:PutLogEvents"]
    resources = ["${aws_cloudwatch_log_group.app.arn}:*"]
  }
}

resource "aws_iam_role_policy" "task_execution" {
  name   = "task-execution"
  role   = aws_iam_role.task_execution.id
  policy = data.aws_iam_policy_document.task_execution.json
}

# --- Task role: what Kiln does with AWS ---

resource "aws_iam_role" "task" {
  name               = "${local.name}-task"
  description        = "Kiln tasks of ${local.name}: secrets, database and Valkey logins, uploads"
  assume_role_policy = data.aws_iam_policy_document.ecs_tasks_trust.json
}

data "aws_iam_policy_document" "task" {
  # Exactly the secrets named in the task's *_SECRET_ARN variables.
  statement {
    sid       = "ReadOwnSecrets"
    actions   = ["secretsmanager:GetSecretValue"]
    resources = local.app_secret_resource_arns
  }

  statement {
    sid       = "DecryptSecrets"
    actions   = ["kms:Decrypt"]
    resources = concat([aws_kms_key.data.arn], var.external_secrets_kms_key_arns)
    condition {
      test     = "StringEquals"
      variable = "kms:ViaService"
      values   = ["secretsmanager.${local.region}.amazonaws.com"]
    }
  }

  # IAM database authentication through RDS Proxy: the resource is the
  # proxy's resource id (prx-…), never its name, and both alternating users.
  statement {
    sid     = "ConnectDatabase"
    actions = ["rds-db:connect"]
    resources = [
      for user in local.db_users :
      "arn:${local.partition}:rds-db:${local.region}:${local.account_id}:dbuser:${local.db_proxy_resource_id}/${user}"
    ]
  }

  # IAM authentication to Valkey needs Connect on the cache AND the user.
  statement {
    sid     = "ConnectValkey"
    actions = ["elasticache:Connect"]
    resources = [
      aws_elasticache_serverless_cache.main.arn,
      aws_elasticache_user.app.arn,
    ]
  }

  statement {
    sid = "UploadObjects"
    actions = [
      "s3:PutObject",
      "s3:GetObject",
      "s3:DeleteObject",
    ]
    resources = ["${aws_s3_bucket.uploads.arn}/users/*"]
  }

  # Listing is confined to users/. "IfExists": S3 also checks ListBucket,
  # without a prefix, to answer a missing key with 404 instead of 403 (Kiln
  # maps 403 to 503); the bucket holds nothing outside users/.
  statement {
    sid       = "ListUploads"
    actions   = ["s3:ListBucket"]
    resources = [aws_s3_bucket.uploads.arn]
    condition {
      test     = "StringLikeIfExists"
      variable = "s3:prefix"
      values   = ["users/*"]
    }
  }

  statement {
    sid       = "UploadsEncryption"
    actions   = ["kms:Decrypt", "kms:GenerateDataKey"]
    resources = [aws_kms_key.data.arn]
    condition {
      test     = "StringEquals"
      variable = "kms:ViaService"
      values   = ["s3.${local.region}.amazonaws.com"]
    }
  }
}

resource "aws_iam_role_policy" "task" {
  name   = "kiln"
  role   = aws_iam_role.task.id
  policy = data.aws_iam_policy_document.task.json
}

# --- RDS Proxy: reads the app user's secret to log in to Aurora ---

data "aws_iam_policy_document" "rds_trust" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["rds.amazonaws.com"]
    }
    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [local.account_id]
    }
  }
}

resource "aws_iam_role" "db_proxy" {
  name               = "${local.name}-db-proxy"
  description        = "RDS Proxy of ${local.name}: read the app user's secret"
  assume_role_policy = data.aws_iam_policy_document.rds_trust.json
}

data "aws_iam_policy_document" "db_proxy" {
  statement {
    sid       = "ReadAppUserSecret"
    actions   = ["secretsmanager:GetSecretValue"]
    resources = [aws_secretsmanager_secret.db_app.arn]
  }
  statement {
    sid       = "DecryptAppUserSecret"
    actions   = ["kms:Decrypt"]
    resources = [aws_kms_key.data.arn]
    condition {
      test     = "StringEquals"
      variable = "kms:ViaService"
      values   = ["secretsmanager.${local.region}.amazonaws.com"]
    }
  }
}

resource "aws_iam_role_policy" "db_proxy" {
  name   = "db-proxy"
  role   = aws_iam_role.db_proxy.id
  policy = data.aws_iam_policy_document.db_proxy.json
}

# --- VPC flow logs ---

data "aws_iam_policy_document" "flow_logs_trust" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["vpc-flow-logs.amazonaws.com"]
    }
    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [local.account_id]
    }
  }
}

resource "aws_iam_role" "flow_logs" {
  name               = "${local.name}-flow-logs"
  description        = "VPC flow logs of ${local.name} to CloudWatch Logs"
  assume_role_policy = data.aws_iam_policy_document.flow_logs_trust.json
}

data "aws_iam_policy_document" "flow_logs" {
  statement {
    actions = [
      "logs:CreateLogStream",
      "logs:PutLogEvents",
      "logs:DescribeLogGroups",
      "logs:DescribeLogStreams",
    ]
    resources = [
      aws_cloudwatch_log_group.flow_logs.arn,
      "${aws_cloudwatch_log_group.flow_logs.arn}:*",
    ]
  }
}

resource "aws_iam_role_policy" "flow_logs" {
  name   = "flow-logs"
  role   = aws_iam_role.flow_logs.id
  policy = data.aws_iam_policy_document.flow_logs.json
}

# --- Rotation functions ---

data "aws_iam_policy_document" "lambda_trust" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["lambda.amazonaws.com"]
    }
    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [local.account_id]
    }
  }
}

resource "aws_iam_role" "rotation" {
  for_each = local.rotation_functions

  name               = "${local.name}-rotate-${each.key}"
  description        = "${each.value.description} (${local.name})"
  assume_role_policy = data.aws_iam_policy_document.lambda_trust.json
}

# ENIs in the VPC (the actions have no resource-level scoping).
resource "aws_iam_role_policy_attachment" "rotation_vpc" {
  for_each = local.rotation_functions

  role       = aws_iam_role.rotation[each.key].name
  policy_arn = "arn:${local.partition}:iam::aws:policy/service-role/AWSLambdaVPCAccessExecutionRole"
}

data "aws_iam_policy_document" "rotation" {
  for_each = local.rotation_functions

  # The rotation steps, on this function's own secret only.
  statement {
    sid = "RotateOwnSecret"
    actions = [
      "secretsmanager:DescribeSecret",
      "secretsmanager:GetSecretValue",
      "secretsmanager:PutSecretValue",
      "secretsmanager:UpdateSecretVersionStage",
    ]
    resources = [each.value.secret_arn]
  }

  statement {
    sid       = "RandomPassword"
    actions   = ["secretsmanager:GetRandomPassword"]
    resources = ["*"] # the action has no resource
  }

  statement {
    sid       = "SecretEncryption"
    actions   = ["kms:Decrypt", "kms:GenerateDataKey"]
    resources = [aws_kms_key.data.arn]
    condition {
      test     = "StringEquals"
      variable = "kms:ViaService"
      values   = ["secretsmanager.${local.region}.amazonaws.com"]
    }
  }

  # Restart the service when hot reload is off.
  statement {
    sid       = "RedeployService"
    actions   = ["ecs:UpdateService", "ecs:DescribeServices"]
    resources = [local.service_arn]
  }

  statement {
    sid       = "Logs"
    actions   = ["logs:CreateLogStream", "logs:PutLogEvents"]
    resources = ["${aws_cloudwatch_log_group.rotation[each.key].arn}:*"]
  }

  # Alternating users: the function logs in as the master user to create
  # the other user and set its password.
  dynamic "statement" {
    for_each = each.key == "db-user" ? [1] : []
    content {
      sid       = "ReadMasterSecret"
      actions   = ["secretsmanager:GetSecretValue", "secretsmanager:DescribeSecret"]
      resources = [aws_secretsmanager_secret.db_master.arn]
    }
  }

  dynamic "statement" {
    for_each = each.key == "valkey-user" ? [1] : []
    content {
      sid       = "SetValkeyPassword"
      actions   = ["elasticache:ModifyUser", "elasticache:DescribeUsers"]
      resources = [aws_elasticache_user.ops.arn]
    }
  }
}

resource "aws_iam_role_policy" "rotation" {
  for_each = local.rotation_functions

  name   = "rotation"
  role   = aws_iam_role.rotation[each.key].id
  policy = data.aws_iam_policy_document.rotation[each.key].json
}

# --- AWS Backup ---

data "aws_iam_policy_document" "backup_trust" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["backup.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "backup" {
  name               = "${local.name}-backup"
  description        = "AWS Backup of ${local.name}"
  assume_role_policy = data.aws_iam_policy_document.backup_trust.json
}

resource "aws_iam_role_policy_attachment" "backup" {
  for_each = toset([
    "service-role/AWSBackupServiceRolePolicyForBackup",
    "service-role/AWSBackupServiceRolePolicyForRestores",
  ])

  role       = aws_iam_role.backup.name
  policy_arn = "arn:${local.partition}:iam::aws:policy/${each.key}"
}
