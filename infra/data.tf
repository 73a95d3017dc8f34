# Aurora PostgreSQL Serverless v2 behind RDS Proxy. Kiln logs in to the
# proxy with IAM tokens only; the proxy logs in to Aurora with the app
# user's secret (rotated by alternating users).

resource "aws_db_subnet_group" "aurora" {
  name        = local.name
  description = "${local.name}: Aurora, private subnets only"
  subnet_ids  = aws_subnet.private[*].id
}

resource "aws_rds_cluster_parameter_group" "aurora" {
  name        = "${local.name}-aurora-pg${local.aurora_major_version}"
  family      = "aurora-postgresql${local.aurora_major_version}"
  description = "${local.name}: TLS required"

  # Refuse every unencrypted connection, whoever makes it. pending-reboot
  # is accepted whether the engine version treats it as static or dynamic;
  # a new cluster starts with it.
  parameter {
    name         = "rds.force_ssl"
    value        = "1"
    apply_method = "pending-reboot"
  }

  parameter {
    name  = "ssl_min_protocol_version"
    value = "TLSv1.2"
  }

  # Statements slower than this are logged (exported to CloudWatch Logs).
  parameter {
    name  = "log_min_duration_statement"
    value = tostring(var.db_log_min_duration_ms)
  }

  lifecycle {
    create_before_destroy = true
  }
}

locals {
  aurora_major_version = split(".", var.aurora_engine_version)[0]
}

# RDS would create this log group itself, without retention or our key.
resource "aws_cloudwatch_log_group" "aurora" {
  name              = "/aws/rds/cluster/${local.aurora_cluster_id}/postgresql"
  retention_in_days = var.log_retention_days
  kms_key_id        = aws_kms_key.logs.arn
}

resource "aws_rds_cluster" "main" {
  cluster_identifier = local.aurora_cluster_id
  engine             = "aurora-postgresql"
  engine_mode        = "provisioned" # Serverless v2 is "provisioned" with db.serverless instances
  engine_version     = var.aurora_engine_version
  database_name      = var.db_name
  port               = local.db_port

  # Write-only: the password goes to RDS and to the master secret
  # (secrets.tf) in the same apply, and to no state file.
  master_username            = var.db_master_username
  master_password_wo         = ephemeral.random_password.db_master.result
  master_password_wo_version = var.db_master_password_version

  serverlessv2_scaling_configuration {
    min_capacity = var.aurora_min_acu
    max_capacity = var.aurora_max_acu
  }

  storage_encrypted = true
  kms_key_id        = aws_kms_key.data.arn

  iam_database_authentication_enabled = true

  db_subnet_group_name            = aws_db_subnet_group.aurora.name
  vpc_security_group_ids          = [aws_security_group.aurora.id]
  db_cluster_parameter_group_name = aws_rds_cluster_parameter_group.aurora.name

  backup_retention_period      = var.db_backup_retention_days
  preferred_backup_window      = "02:00-03:00"
  preferred_maintenance_window = "sun:03:30-sun:04:30"
  copy_tags_to_snapshot        = true
  deletion_protection          = var.deletion_protection
  skip_final_snapshot          = false
  final_snapshot_identifier    = "${local.aurora_cluster_id}-final"

  enabled_cloudwatch_logs_exports = ["postgresql"]

  depends_on = [aws_cloudwatch_log_group.aurora]

  lifecycle {
    precondition {
      condition     = var.aurora_min_acu <= var.aurora_max_acu
      error_message = "aurora_min_acu must not exceed aurora_max_acu."
    }
  }
}

# Writer and reader in different zones: a zone failure promotes the reader.
# The reader waits for the writer, so the writer is the first instance.
resource "aws_rds_cluster_instance" "writer" {
  identifier          = "${local.aurora_cluster_id}-1"
  cluster_identifier  = aws_rds_cluster.main.id
  engine              = aws_rds_cluster.main.engine
  engine_version      = aws_rds_cluster.main.engine_version
  instance_class      = "db.serverless"
  availability_zone   = local.azs[0]
  promotion_tier      = 0
  publicly_accessible = false
  ca_cert_identifier  = "rds-ca-rsa2048-g1"

  db_subnet_group_name            = aws_db_subnet_group.aurora.name
  auto_minor_version_upgrade      = true
  performance_insights_enabled    = true
  performance_insights_kms_key_id = aws_kms_key.data.arn
}

resource "aws_rds_cluster_instance" "reader" {
  identifier          = "${local.aurora_cluster_id}-2"
  cluster_identifier  = aws_rds_cluster.main.id
  engine              = aws_rds_cluster.main.engine
  engine_version      = aws_rds_cluster.main.engine_version
  instance_class      = "db.serverless"
  availability_zone   = local.azs[1]
  promotion_tier      = 1
  publicly_accessible = false
  ca_cert_identifier  = "rds-ca-rsa2048-g1"

  db_subnet_group_name            = aws_db_subnet_group.aurora.name
  auto_minor_version_upgrade      = true
  performance_insights_enabled    = true
  performance_insights_kms_key_id = aws_kms_key.data.arn

  depends_on = [aws_rds_cluster_instance.writer]
}

# --- RDS Proxy ---

resource "aws_db_proxy" "main" {
  name                   = "${local.name}-proxy"
  engine_family          = "POSTGRESQL"
  role_arn               = aws_iam_role.db_proxy.arn
  vpc_subnet_ids         = aws_subnet.private[*].id
  vpc_security_group_ids = [aws_security_group.db_proxy.id]

  require_tls         = true
  idle_client_timeout = 1800
  debug_logging       = false # would log SQL text

  # Clients must present an IAM token (rds-db:connect on the proxy's
  # resource id and the user); the proxy then logs in to Aurora with the
  # password in the app user's secret.
  auth {
    description               = "Kiln app user (alternating ${local.db_users[0]}/${local.db_users[1]})"
    auth_scheme               = "SECRETS"
    iam_auth                  = "REQUIRED"
    secret_arn                = aws_secretsmanager_secret.db_app.arn
    client_password_auth_type = "POSTGRES_SCRAM_SHA_256"
  }
}

resource "aws_db_proxy_default_target_group" "main" {
  db_proxy_name = aws_db_proxy.main.name

  connection_pool_config {
    max_connections_percent      = 90
    max_idle_connections_percent = 50
    connection_borrow_timeout    = 30
  }
}

resource "aws_db_proxy_target" "aurora" {
  db_proxy_name         = aws_db_proxy.main.name
  target_group_name     = aws_db_proxy_default_target_group.main.name
  db_cluster_identifier = aws_rds_cluster.main.cluster_identifier
}

locals {
  # rds-db:connect names the proxy by its resource id ("prx-…", the last
  # part of its ARN), not by its name: with the name every login is denied.
  db_proxy_resource_id = element(split(":", aws_db_proxy.main.arn), 6)
}
