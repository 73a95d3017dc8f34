# AWS Backup for Aurora, on top of Aurora's own point-in-time recovery
# (db_backup_retention_days): long-term recovery points in a vault under
# our key, optionally copied to a vault in another region or account.

resource "aws_backup_vault" "main" {
  name        = "${local.name}-backup"
  kms_key_arn = aws_kms_key.data.arn
}

# Governance-mode lock (optional): recovery points cannot be deleted before
# their retention ends, even by an administrator without the bypass right.
resource "aws_backup_vault_lock_configuration" "main" {
  count = var.enable_backup_vault_lock ? 1 : 0

  backup_vault_name  = aws_backup_vault.main.name
  min_retention_days = var.backup_daily_retention_days
  max_retention_days = var.backup_yearly_retention_days
}

resource "aws_backup_vault_notifications" "main" {
  backup_vault_name   = aws_backup_vault.main.name
  sns_topic_arn       = aws_sns_topic.alarms.arn
  backup_vault_events = ["BACKUP_JOB_FAILED", "COPY_JOB_FAILED", "RESTORE_JOB_COMPLETED"]
}

# Aurora snapshots cannot move to cold storage; the monthly and yearly
# rules opt in for resources that can, so adding such a resource to the
# selection later archives it without another change here.
resource "aws_backup_plan" "main" {
  name = "${local.name}-aurora"

  rule {
    rule_name         = "daily"
    target_vault_name = aws_backup_vault.main.name
    schedule          = "cron(0 4 * * ? *)"
    start_window      = 60
    completion_window = 360

    lifecycle {
      delete_after = var.backup_daily_retention_days
    }

    dynamic "copy_action" {
      for_each = var.backup_copy_vault_arn != null ? [var.backup_copy_vault_arn] : []
      content {
        destination_vault_arn = copy_action.value
        lifecycle {
          delete_after = var.backup_daily_retention_days
        }
      }
    }
  }

  rule {
    rule_name         = "weekly"
    target_vault_name = aws_backup_vault.main.name
    schedule          = "cron(0 5 ? * SUN *)"
    start_window      = 60
    completion_window = 360

    lifecycle {
      delete_after = var.backup_weekly_retention_days
    }

    dynamic "copy_action" {
      for_each = var.backup_copy_vault_arn != null ? [var.backup_copy_vault_arn] : []
      content {
        destination_vault_arn = copy_action.value
        lifecycle {
          delete_after = var.backup_weekly_retention_days
        }
      }
    }
  }

  rule {
    rule_name         = "monthly"
    target_vault_name = aws_backup_vault.main.name
    schedule          = "cron(0 6 1 * ? *)"
    start_window      = 60
    completion_window = 720

    lifecycle {
      cold_storage_after                        = 90
      delete_after                              = var.backup_monthly_retention_days
      opt_in_to_archive_for_supported_resources = true
    }

    dynamic "copy_action" {
      for_each = var.backup_copy_vault_arn != null ? [var.backup_copy_vault_arn] : []
      content {
        destination_vault_arn = copy_action.value
        lifecycle {
          cold_storage_after                        = 90
          delete_after                              = var.backup_monthly_retention_days
          opt_in_to_archive_for_supported_resources = true
        }
      }
    }
  }

  rule {
    rule_name         = "yearly"
    target_vault_name = aws_backup_vault.main.name
    schedule          = "cron(0 7 1 1 ? *)"
    start_window      = 60
    completion_window = 720

    lifecycle {
      cold_storage_after                        = 90
      delete_after                              = var.backup_yearly_retention_days
      opt_in_to_archive_for_supported_resources = true
    }

    dynamic "copy_action" {
      for_each = var.backup_copy_vault_arn != null ? [var.backup_copy_vault_arn] : []
      content {
        destination_vault_arn = copy_action.value
        lifecycle {
          cold_storage_after                        = 90
          delete_after                              = var.backup_yearly_retention_days
          opt_in_to_archive_for_supported_resources = true
        }
      }
    }
  }
}

resource "aws_backup_selection" "aurora" {
  name         = "${local.name}-aurora"
  plan_id      = aws_backup_plan.main.id
  iam_role_arn = aws_iam_role.backup.arn
  resources    = [aws_rds_cluster.main.arn]
}
