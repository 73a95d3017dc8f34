# ElastiCache Serverless for Valkey: sessions, rate limits, caches. Always
# TLS; Kiln logs in with IAM tokens as an IAM-authenticated user.

# ElastiCache puts a user named "default" in every user group; ours can
# neither log in (off) nor run anything (-@all), and its password is never
# used by anyone.
resource "random_password" "valkey_default" {
  length  = 64
  special = false
}

resource "aws_elasticache_user" "default" {
  user_id       = "${local.short_name}-default"
  user_name     = "default"
  engine        = "valkey"
  access_string = "off ~* -@all"

  authentication_mode {
    type      = "password"
    passwords = [random_password.valkey_default.result]
  }
}

# Kiln's user. IAM authentication requires user_id == user_name.
resource "aws_elasticache_user" "app" {
  user_id   = local.valkey_app_user
  user_name = local.valkey_app_user
  engine    = "valkey"
  # Kiln uses strings, counters, expiry and MULTI/EXEC; nothing dangerous
  # (no FLUSHALL, KEYS, CONFIG, DEBUG…).
  access_string = "on ~* -@all +@read +@write +@transaction +@connection -@dangerous"

  authentication_mode {
    type = "iam"
  }
}

# Break-glass user for operators (read-only), password in Secrets Manager
# and rotated there (rotation.tf). The first password is replaced by the
# first rotation at once; Terraform leaves the rotated ones alone.
resource "random_password" "valkey_ops_initial" {
  length  = 64
  special = false
}

resource "aws_elasticache_user" "ops" {
  user_id       = local.valkey_ops_user
  user_name     = local.valkey_ops_user
  engine        = "valkey"
  access_string = "on ~* -@all +@read +@connection -@dangerous +info"

  authentication_mode {
    type      = "password"
    passwords = [random_password.valkey_ops_initial.result]
  }

  lifecycle {
    ignore_changes = [authentication_mode]
  }
}

resource "aws_elasticache_user_group" "main" {
  user_group_id = "${local.short_name}-users"
  engine        = "valkey"
  user_ids = [
    aws_elasticache_user.default.user_id,
    aws_elasticache_user.app.user_id,
    aws_elasticache_user.ops.user_id,
  ]
}

resource "aws_elasticache_serverless_cache" "main" {
  name                 = local.cache_name
  engine               = "valkey"
  major_engine_version = var.valkey_major_version
  description          = "${local.name}: sessions, rate limits, caches"

  subnet_ids         = aws_subnet.private[*].id
  security_group_ids = [aws_security_group.valkey.id]
  kms_key_id         = aws_kms_key.data.arn
  user_group_id      = aws_elasticache_user_group.main.user_group_id

  cache_usage_limits {
    data_storage {
      maximum = var.valkey_max_storage_gb
      unit    = "GB"
    }
    ecpu_per_second {
      maximum = var.valkey_max_ecpu_per_second
    }
  }

  daily_snapshot_time      = "03:00"
  snapshot_retention_limit = var.valkey_snapshot_retention_days
}
