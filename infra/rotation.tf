# Secret rotation functions (code: infra/lambdas; zips: `make lambdas`
# -> build/lambdas/arm64/rotate-<kind>.zip). They run in the private subnets so
# that the DB function can reach Aurora and the Valkey one the cache; after
# a rotation they either let Kiln's hot reload pick the new value up
# (ENABLE_SECRET_RELOAD) or force a new ECS deployment.

resource "aws_cloudwatch_log_group" "rotation" {
  for_each = local.rotation_functions

  name              = "/aws/lambda/${local.name}-rotate-${each.key}"
  retention_in_days = var.log_retention_days
  kms_key_id        = aws_kms_key.logs.arn
}

resource "aws_lambda_function" "rotation" {
  for_each = local.rotation_functions

  function_name = "${local.name}-rotate-${each.key}"
  description   = each.value.description
  role          = aws_iam_role.rotation[each.key].arn

  runtime       = "provided.al2023"
  architectures = ["arm64"]
  handler       = "bootstrap"
  # build/lambdas/arm64/rotate-<kind>.zip from `LAMBDA_ARCH=arm64 make lambdas`.
  filename         = "${var.lambda_artifacts_dir}/rotate-${each.key}.zip"
  source_code_hash = filebase64sha256("${var.lambda_artifacts_dir}/rotate-${each.key}.zip")

  timeout     = 120
  memory_size = 256

  vpc_config {
    subnet_ids         = aws_subnet.private[*].id
    security_group_ids = [aws_security_group.rotation.id]
  }

  logging_config {
    log_format = "JSON"
    log_group  = aws_cloudwatch_log_group.rotation[each.key].name
  }

  environment {
    variables = local.rotation_env[each.key]
  }

  # The role must be able to create the function's network interfaces
  # before the function exists.
  depends_on = [
    aws_iam_role_policy_attachment.rotation_vpc,
    aws_iam_role_policy.rotation,
  ]
}

locals {
  # The functions' configuration (infra/lambdas: `kiln-rotate --help`).
  rotation_env_common = {
    ECS_CLUSTER = local.cluster_name
    ECS_SERVICE = local.service_name
    # "true": Kiln re-reads the secret itself; "false": the function forces
    # a new deployment so that the tasks restart with the new value.
    HOT_RELOAD = tostring(var.enable_secret_reload)
    LOG_LEVEL  = "info"
  }

  rotation_env = {
    secret-key-base = merge(local.rotation_env_common, {
      ROTATION_KIND = "secret-key-base"
    })
    db-user = merge(local.rotation_env_common, {
      ROTATION_KIND     = "db-user"
      MASTER_SECRET_ARN = aws_secretsmanager_secret.db_master.arn
      # Straight to Aurora (rds.force_ssl): encrypted. The zip carries no
      # RDS CA bundle to verify the server with (verify-full would need one).
      DB_SSLMODE = "require"
    })
    valkey-user = merge(local.rotation_env_common, {
      ROTATION_KIND       = "valkey-user"
      VALKEY_HOST         = aws_elasticache_serverless_cache.main.endpoint[0].address
      VALKEY_PORT         = tostring(aws_elasticache_serverless_cache.main.endpoint[0].port)
      VALKEY_SSL          = "true"
      ELASTICACHE_USER_ID = aws_elasticache_user.ops.user_id
    })
  }
}

resource "aws_lambda_permission" "rotation" {
  for_each = local.rotation_functions

  statement_id   = "AllowSecretsManagerRotation"
  action         = "lambda:InvokeFunction"
  function_name  = aws_lambda_function.rotation[each.key].function_name
  principal      = "secretsmanager.amazonaws.com"
  source_arn     = each.value.secret_arn
  source_account = local.account_id
}

resource "aws_secretsmanager_secret_rotation" "rotation" {
  for_each = local.rotation_functions

  secret_id           = each.value.secret_arn
  rotation_lambda_arn = aws_lambda_function.rotation[each.key].arn

  rotation_rules {
    automatically_after_days = each.value.rotation_days
  }

  # Every function rotates from a current value: the first versions must
  # exist (the db-user function also needs the master secret's).
  depends_on = [
    aws_lambda_permission.rotation,
    aws_secretsmanager_secret_version.secret_key_base_initial,
    aws_secretsmanager_secret_version.db_app_initial,
    aws_secretsmanager_secret_version.db_master,
    aws_secretsmanager_secret_version.valkey_ops_initial,
  ]
}
