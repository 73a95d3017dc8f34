locals {
  # Every name derives from these two. The variables' validations cap the
  # project at 12 and the environment at 20 characters, lower case, no
  # double or trailing hyphen, so `name` is at most 33 characters and legal
  # wherever AWS takes a hyphenated lower-case name (infra-check proves it
  # for the longest values).
  name = "${var.project}-${var.environment}"

  # At most 24 characters, for the resources AWS caps at 32 or 40 characters
  # (load balancer, target group, ElastiCache ids) and for bucket names,
  # which also carry the account and region. Long names are cut and given a
  # hash of the full name, so two long environments never collide.
  short_name = length(local.name) <= 24 ? local.name : "${trimsuffix(substr(local.name, 0, 17), "-")}-${substr(sha1(local.name), 0, 6)}"

  account_id = data.aws_caller_identity.current.account_id
  region     = data.aws_region.current.name
  partition  = data.aws_partition.current.partition

  # S3 bucket names are global: the account id and region make ours unique
  # without a random suffix, so they are known before apply and stable.
  bucket_suffix = "${local.account_id}-${local.region}"

  azs       = slice(data.aws_availability_zones.available.names, 0, var.az_count)
  nat_count = var.single_nat_gateway ? 1 : var.az_count

  public_url = "https://${var.domain_name}"

  # ECS. The names are known before apply, so the rotation functions and
  # their IAM policies can name the service without depending on it.
  cluster_name   = local.name
  service_name   = "${local.name}-api"
  task_family    = local.name
  container_name = "kiln"
  container_port = 8443
  service_arn    = "arn:${local.partition}:ecs:${local.region}:${local.account_id}:service/${local.cluster_name}/${local.service_name}"

  # Data stores.
  aurora_cluster_id = local.name
  db_port           = 5432
  # Alternating users: the rotation function switches the app secret
  # between these two, so the previous user's open connections keep working
  # for a whole rotation period (docs/SECRETS.md). The second name is the
  # first plus "_clone", as infra/lambdas/src/kind_db.c (and AWS's template)
  # derives it; infra-check keeps the two in step.
  db_users = [var.db_app_username, "${var.db_app_username}_clone"]

  cache_name = "${local.name}-kv"
  # IAM authentication requires user_id == user_name, lower case.
  valkey_app_user = "${local.short_name}-app"
  valkey_ops_user = "${local.short_name}-ops"

  # Secrets Kiln reads itself (`<NAME>_SECRET_ARN`, re-read on reload);
  # `arn#field` picks one field of a JSON secret. Optional OAuth secrets are
  # null when not configured and dropped below. The task role may read
  # exactly these secrets (iam.tf).
  app_secret_arns = merge({
    SECRET_KEY_BASE      = aws_secretsmanager_secret.secret_key_base.arn
    DB_USERNAME          = "${aws_secretsmanager_secret.db_app.arn}#username"
    GOOGLE_CLIENT_SECRET = var.google_client_secret_arn
    APPLE_PRIVATE_KEY    = var.apple_private_key_secret_arn
  }, var.extra_secret_arns)

  app_secret_env = {
    for name, arn in local.app_secret_arns : "${name}_SECRET_ARN" => arn if arn != null
  }

  # The secret ARNs without their `#field` suffix, for IAM.
  app_secret_resource_arns = distinct([
    for arn in values(local.app_secret_arns) : split("#", arn)[0] if arn != null
  ])

  # Kiln's environment (docs/ENVIRONMENT.md). Optional values are null when
  # not configured and dropped from the task definition.
  container_env = {
    KILN_ENV     = "production"
    PORT         = tostring(local.container_port)
    BIND_ADDRESS = "0.0.0.0"
    # HTTPS inside the task with a self-signed certificate generated in
    # memory at start: the ALB re-encrypts to the target and does not verify
    # target certificates, so nothing crosses the VPC in clear.
    SSL_SELF_SIGNED          = "true"
    TRUSTED_PROXY_HOPS       = "1"
    PUBLIC_URL               = local.public_url
    LOG_LEVEL                = var.log_level
    SHUTDOWN_TIMEOUT_SECONDS = tostring(var.shutdown_timeout_seconds)
    MIGRATE_ON_START         = "false"

    # PostgreSQL through RDS Proxy, IAM tokens only. The proxy presents an
    # ACM certificate (Amazon Trust Services roots, in the system CA store),
    # not one from the RDS CA, hence the default bundle (variables.tf).
    DB_HOST                = aws_db_proxy.main.endpoint
    DB_PORT                = tostring(local.db_port)
    DB_NAME                = var.db_name
    DB_IAM_AUTH            = "true"
    REQUIRE_IAM_AUTH       = "true"
    DB_SSLMODE             = "verify-full"
    DB_SSLROOTCERT         = var.db_ssl_root_cert
    DB_PREPARED_STATEMENTS = "false"
    # RDS Proxy is a transaction-mode pooler: one statement in flight per
    # connection (docs/ENVIRONMENT.md, DB_PIPELINE).
    DB_PIPELINE = "false"

    AWS_REGION = local.region

    VALKEY_HOST       = aws_elasticache_serverless_cache.main.endpoint[0].address
    VALKEY_PORT       = tostring(aws_elasticache_serverless_cache.main.endpoint[0].port)
    VALKEY_SSL        = "true"
    VALKEY_IAM_AUTH   = "true"
    VALKEY_USER       = local.valkey_app_user
    VALKEY_CLUSTER_ID = local.cache_name

    ENABLE_SECRET_RELOAD           = tostring(var.enable_secret_reload)
    SECRET_RELOAD_INTERVAL_SECONDS = tostring(var.secret_reload_interval_seconds)

    UPLOADS_BUCKET = aws_s3_bucket.uploads.bucket

    GOOGLE_CLIENT_ID = var.google_client_id
    APPLE_CLIENT_ID  = var.apple_client_id
    APPLE_TEAM_ID    = var.apple_team_id
    APPLE_KEY_ID     = var.apple_key_id
  }

  # Rotation functions (infra/lambdas, zips built by `make lambdas`).
  rotation_functions = {
    secret-key-base = {
      description   = "Rotates SECRET_KEY_BASE (random 64-byte value)"
      secret_arn    = aws_secretsmanager_secret.secret_key_base.arn
      rotation_days = var.secret_key_base_rotation_days
    }
    db-user = {
      description   = "Rotates the database app user (alternating users)"
      secret_arn    = aws_secretsmanager_secret.db_app.arn
      rotation_days = var.db_password_rotation_days
    }
    valkey-user = {
      description   = "Rotates the Valkey break-glass user's password (ModifyUser)"
      secret_arn    = aws_secretsmanager_secret.valkey_ops.arn
      rotation_days = var.valkey_password_rotation_days
    }
  }
}
