# Customer managed keys, one per trust boundary: whoever may use a key is
# named in its policy, and the services that write with a key (CloudWatch
# Logs, CloudWatch alarms, CloudTrail) are only in the policy of theirs.
# Every key rotates yearly.

# Account root may administer every key (and delegate use through IAM),
# so a key can never become unmanageable.
data "aws_iam_policy_document" "kms_root" {
  statement {
    sid       = "AccountAdministers"
    actions   = ["kms:*"]
    resources = ["*"]
    principals {
      type        = "AWS"
      identifiers = ["arn:${local.partition}:iam::${local.account_id}:root"]
    }
  }
}

# --- Data at rest: Aurora (and Performance Insights), Secrets Manager,
# Valkey, uploads bucket, ECR, backups. ---
resource "aws_kms_key" "data" {
  description             = "${local.name}: data at rest"
  enable_key_rotation     = true
  deletion_window_in_days = 30
  policy                  = data.aws_iam_policy_document.kms_root.json
}

resource "aws_kms_alias" "data" {
  name          = "alias/${local.name}/data"
  target_key_id = aws_kms_key.data.key_id
}

# --- CloudWatch Logs ---
data "aws_iam_policy_document" "kms_logs" {
  source_policy_documents = [data.aws_iam_policy_document.kms_root.json]

  statement {
    sid = "CloudWatchLogsUse"
    actions = [
      "kms:Encrypt*",
      "kms:Decrypt*",
      "kms:ReEncrypt*",
      "kms:GenerateDataKey*",
      "kms:Describe*",
    ]
    resources = ["*"]
    principals {
      type        = "Service"
      identifiers = ["logs.${local.region}.amazonaws.com"]
    }
    # Only for this account's log groups in this region.
    condition {
      test     = "ArnLike"
      variable = "kms:EncryptionContext:aws:logs:arn"
      values   = ["arn:${local.partition}:logs:${local.region}:${local.account_id}:log-group:*"]
    }
  }
}

resource "aws_kms_key" "logs" {
  description             = "${local.name}: CloudWatch Logs"
  enable_key_rotation     = true
  deletion_window_in_days = 30
  policy                  = data.aws_iam_policy_document.kms_logs.json
}

resource "aws_kms_alias" "logs" {
  name          = "alias/${local.name}/logs"
  target_key_id = aws_kms_key.logs.key_id
}

# --- Alarm topic (SNS) ---
# CloudWatch alarms, Budgets and AWS Backup publish to an encrypted topic
# only if they may use its key: without this statement the alarms fire and
# nobody hears them.
data "aws_iam_policy_document" "kms_alarms" {
  source_policy_documents = [data.aws_iam_policy_document.kms_root.json]

  statement {
    sid       = "AlarmPublishersUse"
    actions   = ["kms:Decrypt", "kms:GenerateDataKey*"]
    resources = ["*"]
    principals {
      type = "Service"
      identifiers = [
        "cloudwatch.amazonaws.com",
        "budgets.amazonaws.com",
        "backup.amazonaws.com",
      ]
    }
    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [local.account_id]
    }
  }
}

resource "aws_kms_key" "alarms" {
  description             = "${local.name}: alarm notifications (SNS)"
  enable_key_rotation     = true
  deletion_window_in_days = 30
  policy                  = data.aws_iam_policy_document.kms_alarms.json
}

resource "aws_kms_alias" "alarms" {
  name          = "alias/${local.name}/alarms"
  target_key_id = aws_kms_key.alarms.key_id
}

# --- CloudTrail ---
data "aws_iam_policy_document" "kms_cloudtrail" {
  source_policy_documents = [data.aws_iam_policy_document.kms_root.json]

  statement {
    sid       = "CloudTrailEncrypts"
    actions   = ["kms:GenerateDataKey*"]
    resources = ["*"]
    principals {
      type        = "Service"
      identifiers = ["cloudtrail.amazonaws.com"]
    }
    condition {
      test     = "StringLike"
      variable = "kms:EncryptionContext:aws:cloudtrail:arn"
      values   = ["arn:${local.partition}:cloudtrail:*:${local.account_id}:trail/*"]
    }
    condition {
      test     = "StringEquals"
      variable = "aws:SourceArn"
      values   = [local.cloudtrail_arn]
    }
  }

  statement {
    sid       = "CloudTrailDescribes"
    actions   = ["kms:DescribeKey"]
    resources = ["*"]
    principals {
      type        = "Service"
      identifiers = ["cloudtrail.amazonaws.com"]
    }
  }
}

resource "aws_kms_key" "cloudtrail" {
  description             = "${local.name}: CloudTrail log files"
  enable_key_rotation     = true
  deletion_window_in_days = 30
  policy                  = data.aws_iam_policy_document.kms_cloudtrail.json
}

resource "aws_kms_alias" "cloudtrail" {
  name          = "alias/${local.name}/cloudtrail"
  target_key_id = aws_kms_key.cloudtrail.key_id
}
