# --- Identity and placement ---

variable "project" {
  type        = string
  description = "Project name, the first part of every resource name and the Project tag (budget filter). Lower case, at most 12 characters."
  default     = "kiln"

  validation {
    condition     = can(regex("^[a-z][a-z0-9]*(-[a-z0-9]+)*$", var.project)) && length(var.project) <= 12
    error_message = "project: lower-case letters, digits and single inner hyphens, starting with a letter, at most 12 characters."
  }
}

variable "environment" {
  type        = string
  description = "Environment name (production, staging, …), the second part of every resource name and the Environment tag. At most 20 characters."

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{0,19}$", var.environment))
    error_message = "environment must match ^[a-z][a-z0-9-]{0,19}$ (lower case, starts with a letter, at most 20 characters)."
  }

  # ElastiCache and RDS identifiers refuse a trailing or doubled hyphen.
  validation {
    condition     = can(regex("^[a-z0-9]+(-[a-z0-9]+)*$", var.environment))
    error_message = "environment may not end with a hyphen or contain two hyphens in a row."
  }
}

variable "aws_region" {
  type        = string
  description = "AWS region of the stack (e.g. eu-west-1)."

  validation {
    condition     = can(regex("^[a-z]{2}(-[a-z]+)+-[0-9]$", var.aws_region))
    error_message = "aws_region must be a region code such as eu-west-1."
  }
}

variable "allowed_account_ids" {
  type        = list(string)
  description = "If set, the provider refuses to run against any other AWS account (guards against applying production to the wrong account)."
  default     = null
}

variable "extra_tags" {
  type        = map(string)
  description = "More tags for every resource (cost centre, owner…). Project, Environment and ManagedBy are always set and win over these."
  default     = {}
}

# --- Network ---

variable "vpc_cidr" {
  type        = string
  description = "VPC address range, /16 to /18 (public /24-equivalents and private /20-equivalents are carved from it)."
  default     = "10.40.0.0/16"

  validation {
    condition     = can(cidrhost(var.vpc_cidr, 0)) && contains(["16", "17", "18"], try(split("/", var.vpc_cidr)[1], ""))
    error_message = "vpc_cidr must be an IPv4 CIDR block with a /16, /17 or /18 prefix."
  }
}

variable "az_count" {
  type        = number
  description = "Availability zones to span (2 or 3). Aurora's writer and reader go to the first two."
  default     = 2

  validation {
    condition     = var.az_count >= 2 && var.az_count <= 3
    error_message = "az_count must be 2 or 3."
  }
}

variable "single_nat_gateway" {
  type        = bool
  description = "One NAT gateway for all zones instead of one per zone: cheaper, but a zone outage cuts every private subnet off from the internet. For non-production."
  default     = false
}

# --- Edge ---

variable "domain_name" {
  type        = string
  description = "Public host name of the API (e.g. api.example.com); PUBLIC_URL is https://<domain_name>."

  validation {
    condition     = can(regex("^([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\\.)+[a-z]{2,63}$", var.domain_name))
    error_message = "domain_name must be a lower-case DNS name such as api.example.com."
  }
}

variable "route53_zone_id" {
  type        = string
  description = "Route 53 hosted zone of domain_name. When set, ACM validates a new certificate through it and an alias record points the name at the accelerator (or the ALB). Null: bring certificate_arn and manage DNS elsewhere."
  default     = null
}

variable "certificate_arn" {
  type        = string
  description = "ACM certificate for domain_name, in this region. Null: one is requested and validated through route53_zone_id."
  default     = null

  validation {
    condition     = var.certificate_arn == null || can(regex("^arn:aws[a-z-]*:acm:", var.certificate_arn))
    error_message = "certificate_arn must be an ACM certificate ARN."
  }
}

variable "alb_ssl_policy" {
  type        = string
  description = "TLS policy of the HTTPS listener: TLS 1.3 with 1.2 fallback (default) or TLS 1.3 only."
  default     = "ELBSecurityPolicy-TLS13-1-2-2021-06"

  validation {
    condition     = contains(["ELBSecurityPolicy-TLS13-1-2-2021-06", "ELBSecurityPolicy-TLS13-1-3-2021-06"], var.alb_ssl_policy)
    error_message = "alb_ssl_policy must be ELBSecurityPolicy-TLS13-1-2-2021-06 or ELBSecurityPolicy-TLS13-1-3-2021-06."
  }
}

variable "alb_log_retention_days" {
  type        = number
  description = "Days ALB access logs are kept in their bucket."
  default     = 90

  validation {
    condition     = var.alb_log_retention_days >= 1
    error_message = "alb_log_retention_days must be at least 1."
  }
}

variable "enable_global_accelerator" {
  type        = bool
  description = "Put AWS Global Accelerator (two static anycast IPs) in front of the ALB."
  default     = true
}

variable "deletion_protection" {
  type        = bool
  description = "Deletion protection on the ALB and the Aurora cluster. Turn off only to destroy the environment."
  default     = true
}

# --- Service ---

variable "image_tag" {
  type        = string
  description = "Tag of the Kiln image in this stack's ECR repository (tags are immutable; use the commit)."

  validation {
    condition     = can(regex("^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$", var.image_tag))
    error_message = "image_tag must be a valid Docker tag."
  }
}

variable "task_cpu" {
  type        = number
  description = "Fargate task CPU units (1024 = 1 vCPU)."
  default     = 1024

  validation {
    condition     = contains([256, 512, 1024, 2048, 4096, 8192, 16384], var.task_cpu)
    error_message = "task_cpu must be a Fargate size: 256, 512, 1024, 2048, 4096, 8192 or 16384."
  }
}

variable "task_memory" {
  type        = number
  description = "Fargate task memory in MiB (must suit task_cpu)."
  default     = 2048

  validation {
    condition     = var.task_memory >= 512 && var.task_memory <= 122880
    error_message = "task_memory must be between 512 and 122880 MiB."
  }
}

variable "min_capacity" {
  type        = number
  description = "Fewest running tasks (also the initial count). At least 2, one per zone, in production."
  default     = 2

  validation {
    condition     = var.min_capacity >= 1
    error_message = "min_capacity must be at least 1."
  }
}

variable "max_capacity" {
  type        = number
  description = "Most running tasks auto scaling may start."
  default     = 10

  validation {
    condition     = var.max_capacity >= 1 && var.max_capacity <= 200
    error_message = "max_capacity must be between 1 and 200."
  }
}

variable "cpu_target_percent" {
  type        = number
  description = "Target average CPU utilisation of the service for auto scaling."
  default     = 60

  validation {
    condition     = var.cpu_target_percent >= 10 && var.cpu_target_percent <= 90
    error_message = "cpu_target_percent must be between 10 and 90."
  }
}

variable "requests_per_target" {
  type        = number
  description = "Target ALB requests per task per minute for auto scaling."
  default     = 6000

  validation {
    condition     = var.requests_per_target >= 1
    error_message = "requests_per_target must be positive."
  }
}

variable "shutdown_timeout_seconds" {
  type        = number
  description = "Kiln's drain time after SIGTERM (SHUTDOWN_TIMEOUT_SECONDS). Must stay below container_stop_timeout."
  default     = 25

  validation {
    condition     = var.shutdown_timeout_seconds >= 1 && var.shutdown_timeout_seconds <= 110
    error_message = "shutdown_timeout_seconds must be between 1 and 110."
  }
}

variable "container_stop_timeout" {
  type        = number
  description = "Seconds ECS waits after SIGTERM before SIGKILL (stopTimeout, Fargate maximum 120). Must exceed shutdown_timeout_seconds."
  default     = 40

  validation {
    condition     = var.container_stop_timeout >= 2 && var.container_stop_timeout <= 120
    error_message = "container_stop_timeout must be between 2 and 120 (Fargate's limit)."
  }
}

variable "deregistration_delay" {
  type        = number
  description = "Seconds the ALB lets in-flight requests finish on a leaving task before ECS stops it. At least shutdown_timeout_seconds."
  default     = 30

  validation {
    condition     = var.deregistration_delay >= 0 && var.deregistration_delay <= 3600
    error_message = "deregistration_delay must be between 0 and 3600."
  }
}

variable "log_level" {
  type        = string
  description = "Kiln LOG_LEVEL."
  default     = "info"

  validation {
    condition     = contains(["debug", "info", "warning", "warn", "error"], var.log_level)
    error_message = "log_level must be debug, info, warning, warn or error."
  }
}

variable "ecr_keep_images" {
  type        = number
  description = "Images kept in the ECR repository (older ones expire)."
  default     = 50

  validation {
    condition     = var.ecr_keep_images >= 5
    error_message = "Keep at least 5 images, for rollbacks."
  }
}

variable "uploads_noncurrent_days" {
  type        = number
  description = "Days an overwritten or deleted upload stays recoverable."
  default     = 30

  validation {
    condition     = var.uploads_noncurrent_days >= 1
    error_message = "uploads_noncurrent_days must be at least 1."
  }
}

variable "uploads_extra_cors_origins" {
  type        = list(string)
  description = "Origins besides PUBLIC_URL allowed to POST uploads from a browser (e.g. a separate web front end)."
  default     = []

  validation {
    condition     = alltrue([for o in var.uploads_extra_cors_origins : can(regex("^https://[^/*]+$", o))])
    error_message = "Each origin must be https://host[:port], without a path or wildcard."
  }
}

# --- Secrets and login providers ---

variable "enable_secret_reload" {
  type        = bool
  description = "Kiln re-reads its *_SECRET_ARN secrets periodically (ENABLE_SECRET_RELOAD); the rotation functions then need not restart the service."
  default     = true
}

variable "secret_reload_interval_seconds" {
  type        = number
  description = "SECRET_RELOAD_INTERVAL_SECONDS: how soon a rotated secret reaches running tasks."
  default     = 60

  validation {
    condition     = var.secret_reload_interval_seconds >= 10 && var.secret_reload_interval_seconds <= 3600
    error_message = "secret_reload_interval_seconds must be between 10 and 3600."
  }
}

variable "google_client_id" {
  type        = string
  description = "Google OAuth client id (not secret). Null: Google login off."
  default     = null
}

variable "google_client_secret_arn" {
  type        = string
  description = "ARN of the Secrets Manager secret holding the Google client secret (created outside Terraform; GOOGLE_CLIENT_SECRET_SECRET_ARN)."
  default     = null

  validation {
    condition     = var.google_client_secret_arn == null || can(regex("^arn:aws[a-z-]*:secretsmanager:", var.google_client_secret_arn))
    error_message = "google_client_secret_arn must be a Secrets Manager ARN."
  }
}

variable "apple_client_id" {
  type        = string
  description = "Apple Sign in services id (not secret). Null: Apple login off."
  default     = null
}

variable "apple_team_id" {
  type        = string
  description = "Apple developer team id (not secret)."
  default     = null
}

variable "apple_key_id" {
  type        = string
  description = "Apple Sign in key id (not secret)."
  default     = null
}

variable "apple_private_key_secret_arn" {
  type        = string
  description = "ARN of the secret holding Apple's P8 private key (created outside Terraform; APPLE_PRIVATE_KEY_SECRET_ARN)."
  default     = null

  validation {
    condition     = var.apple_private_key_secret_arn == null || can(regex("^arn:aws[a-z-]*:secretsmanager:", var.apple_private_key_secret_arn))
    error_message = "apple_private_key_secret_arn must be a Secrets Manager ARN."
  }
}

variable "extra_secret_arns" {
  type        = map(string)
  description = "More variables Kiln reads from Secrets Manager: NAME => ARN (or ARN#field) becomes NAME_SECRET_ARN, e.g. OIDC_OKTA_CLIENT_SECRET. The task role may read exactly these and the stack's own secrets."
  default     = {}

  validation {
    condition     = alltrue([for k, v in var.extra_secret_arns : can(regex("^[A-Z][A-Z0-9_]*$", k)) && can(regex("^arn:aws[a-z-]*:secretsmanager:", v))])
    error_message = "Keys must be upper-case variable names and values Secrets Manager ARNs."
  }
}

variable "external_secrets_kms_key_arns" {
  type        = list(string)
  description = "KMS keys of the secrets passed in by ARN (OAuth…), if not the AWS managed key; the task role may decrypt through Secrets Manager with them."
  default     = []
}

variable "secret_recovery_window_days" {
  type        = number
  description = "Days a deleted secret can still be restored."
  default     = 30

  validation {
    condition     = var.secret_recovery_window_days >= 7 && var.secret_recovery_window_days <= 30
    error_message = "secret_recovery_window_days must be between 7 and 30."
  }
}

variable "secret_key_base_rotation_days" {
  type        = number
  description = "Days between SECRET_KEY_BASE rotations. Kiln verifies cookies with the current and the previous key, so rotations closer than the 7-day session lifetime log users out."
  default     = 30

  validation {
    condition     = var.secret_key_base_rotation_days >= 8 && var.secret_key_base_rotation_days <= 365
    error_message = "secret_key_base_rotation_days must be between 8 (longer than a session) and 365."
  }
}

variable "db_password_rotation_days" {
  type        = number
  description = "Days between rotations of the database app user's password (alternating users)."
  default     = 30

  validation {
    condition     = var.db_password_rotation_days >= 1 && var.db_password_rotation_days <= 365
    error_message = "db_password_rotation_days must be between 1 and 365."
  }
}

variable "valkey_password_rotation_days" {
  type        = number
  description = "Days between rotations of the Valkey break-glass user's password."
  default     = 30

  validation {
    condition     = var.valkey_password_rotation_days >= 1 && var.valkey_password_rotation_days <= 365
    error_message = "valkey_password_rotation_days must be between 1 and 365."
  }
}

variable "lambda_artifacts_dir" {
  type        = string
  description = "Folder of the rotation functions' arm64 zips built by `LAMBDA_ARCH=arm64 make lambdas` (rotate-<kind>.zip), relative to the folder Terraform runs in (infra/)."
  default     = "../build/lambdas/arm64"
}

# --- Database ---

variable "db_name" {
  type        = string
  description = "Database name (DB_NAME)."
  default     = "kiln"

  validation {
    condition     = can(regex("^[a-z][a-z0-9_]{0,62}$", var.db_name))
    error_message = "db_name: lower case, starts with a letter, at most 63 characters."
  }
}

variable "db_app_username" {
  type        = string
  description = "The app user; the rotation function alternates between it and <name>_clone. Not the master user."
  default     = "kiln"

  validation {
    # PostgreSQL names hold 63 bytes, and "_clone" must still fit.
    condition     = can(regex("^[a-z][a-z0-9_]{0,56}$", var.db_app_username))
    error_message = "db_app_username: lower case, starts with a letter, at most 57 characters."
  }
}

variable "db_master_username" {
  type        = string
  description = "Aurora master user (used only by the DB user rotation function; its password is in the db-master secret)."
  default     = "kiln_admin"

  validation {
    condition     = can(regex("^[a-z][a-z0-9_]{0,62}$", var.db_master_username)) && !contains(["postgres", "admin", "rdsadmin"], var.db_master_username)
    error_message = "db_master_username: lower case, starts with a letter, and not a reserved name."
  }
}

variable "db_master_password_version" {
  type        = number
  description = "Generation of the Aurora master password: bump it to set a new random password on the cluster and in the db-master secret in one apply (write-only, never in state)."
  default     = 1

  validation {
    condition     = var.db_master_password_version >= 1 && floor(var.db_master_password_version) == var.db_master_password_version
    error_message = "db_master_password_version must be a positive integer."
  }
}

variable "db_ssl_root_cert" {
  type        = string
  description = "DB_SSLROOTCERT in the image. Kiln connects to RDS Proxy, whose certificate comes from ACM (Amazon Trust Services roots, in the system store), not from the RDS CA: the RDS bundle alone fails verify-full against the proxy."
  default     = "/etc/ssl/certs/ca-certificates.crt"
}

variable "aurora_engine_version" {
  type        = string
  description = "Aurora PostgreSQL engine version (major.minor)."
  default     = "16.6"

  validation {
    condition     = can(regex("^1[3-9]\\.[0-9]+$", var.aurora_engine_version))
    error_message = "aurora_engine_version must look like 16.6 (major 13 or later)."
  }
}

variable "aurora_min_acu" {
  type        = number
  description = "Aurora Serverless v2 minimum capacity (ACU, steps of 0.5)."
  default     = 0.5

  validation {
    condition     = var.aurora_min_acu >= 0.5 && var.aurora_min_acu <= 256 && floor(var.aurora_min_acu * 2) == var.aurora_min_acu * 2
    error_message = "aurora_min_acu must be between 0.5 and 256, in steps of 0.5."
  }
}

variable "aurora_max_acu" {
  type        = number
  description = "Aurora Serverless v2 maximum capacity (ACU, steps of 0.5); at least aurora_min_acu."
  default     = 16

  validation {
    condition     = var.aurora_max_acu >= 1 && var.aurora_max_acu <= 256 && floor(var.aurora_max_acu * 2) == var.aurora_max_acu * 2
    error_message = "aurora_max_acu must be between 1 and 256, in steps of 0.5."
  }
}

variable "db_backup_retention_days" {
  type        = number
  description = "Aurora automated backup (point-in-time recovery) retention."
  default     = 14

  validation {
    condition     = var.db_backup_retention_days >= 7 && var.db_backup_retention_days <= 35
    error_message = "db_backup_retention_days must be between 7 and 35."
  }
}

variable "db_log_min_duration_ms" {
  type        = number
  description = "Statements slower than this many milliseconds are logged."
  default     = 1000

  validation {
    condition     = var.db_log_min_duration_ms >= -1
    error_message = "db_log_min_duration_ms must be -1 (off) or more."
  }
}

# --- Valkey ---

variable "valkey_major_version" {
  type        = string
  description = "ElastiCache Serverless Valkey major version."
  default     = "8"

  validation {
    condition     = contains(["7", "8"], var.valkey_major_version)
    error_message = "valkey_major_version must be 7 or 8 (IAM authentication needs 7 or later)."
  }
}

variable "valkey_max_storage_gb" {
  type        = number
  description = "Valkey data storage ceiling in GB."
  default     = 10

  validation {
    condition     = var.valkey_max_storage_gb >= 1 && var.valkey_max_storage_gb <= 5000
    error_message = "valkey_max_storage_gb must be between 1 and 5000."
  }
}

variable "valkey_max_ecpu_per_second" {
  type        = number
  description = "Valkey ECPU per second ceiling."
  default     = 100000

  validation {
    condition     = var.valkey_max_ecpu_per_second >= 1000 && var.valkey_max_ecpu_per_second <= 15000000
    error_message = "valkey_max_ecpu_per_second must be between 1000 and 15000000."
  }
}

variable "valkey_snapshot_retention_days" {
  type        = number
  description = "Daily Valkey snapshots kept (sessions and caches; 0 turns snapshots off)."
  default     = 3

  validation {
    condition     = var.valkey_snapshot_retention_days >= 0 && var.valkey_snapshot_retention_days <= 35
    error_message = "valkey_snapshot_retention_days must be between 0 and 35."
  }
}

# --- Logs, alarms, audit ---

variable "log_retention_days" {
  type        = number
  description = "Retention of the application, Lambda, database and Container Insights log groups."
  default     = 90

  validation {
    condition     = contains([1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653], var.log_retention_days)
    error_message = "log_retention_days must be a CloudWatch Logs retention value (1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, …, 3653)."
  }
}

variable "flow_log_retention_days" {
  type        = number
  description = "Retention of the VPC flow log group."
  default     = 30

  validation {
    condition     = contains([1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653], var.flow_log_retention_days)
    error_message = "flow_log_retention_days must be a CloudWatch Logs retention value."
  }
}

variable "cloudtrail_retention_days" {
  type        = number
  description = "Days CloudTrail log files are kept (archived to Glacier after 90)."
  default     = 2557

  validation {
    condition     = var.cloudtrail_retention_days >= 365
    error_message = "Keep CloudTrail logs at least a year."
  }
}

variable "alarm_email" {
  type        = string
  description = "E-mail address subscribed to the alarm topic (confirm the subscription once). Null: subscribe something else to the topic (output alarm_topic_arn)."
  default     = null

  validation {
    condition     = var.alarm_email == null || can(regex("^[^@\\s]+@[^@\\s]+\\.[^@\\s]+$", var.alarm_email))
    error_message = "alarm_email must be an e-mail address."
  }
}

variable "alarm_5xx_per_minute" {
  type        = number
  description = "5xx responses per minute (ALB's own, and Kiln's) above which the 5xx alarms fire."
  default     = 10
}

variable "alarm_p99_latency_seconds" {
  type        = number
  description = "p99 target response time (seconds) above which the latency alarm fires."
  default     = 1.5
}

variable "alarm_ecs_cpu_percent" {
  type        = number
  description = "Service CPU utilisation alarm threshold (percent)."
  default     = 85
}

variable "alarm_ecs_memory_percent" {
  type        = number
  description = "Service memory utilisation alarm threshold (percent)."
  default     = 85
}

variable "alarm_aurora_cpu_percent" {
  type        = number
  description = "Aurora CPU utilisation alarm threshold (percent)."
  default     = 80
}

variable "alarm_aurora_connections" {
  type        = number
  description = "Aurora connection count alarm threshold."
  default     = 500
}

# --- Backup and cost ---

variable "backup_daily_retention_days" {
  type        = number
  description = "Days daily AWS Backup recovery points are kept."
  default     = 35
}

variable "backup_weekly_retention_days" {
  type        = number
  description = "Days weekly recovery points are kept."
  default     = 90
}

variable "backup_monthly_retention_days" {
  type        = number
  description = "Days monthly recovery points are kept."
  default     = 365

  validation {
    condition     = var.backup_monthly_retention_days >= 180
    error_message = "backup_monthly_retention_days must be at least 180 (cold storage after 90 days needs 90 more)."
  }
}

variable "backup_yearly_retention_days" {
  type        = number
  description = "Days yearly recovery points are kept (2557 = 7 years)."
  default     = 2557

  validation {
    condition     = var.backup_yearly_retention_days >= 365
    error_message = "backup_yearly_retention_days must be at least 365."
  }
}

variable "backup_copy_vault_arn" {
  type        = string
  description = "Backup vault in another region (or account) that every recovery point is copied to. Null: no copy."
  default     = null

  validation {
    condition     = var.backup_copy_vault_arn == null || can(regex("^arn:aws[a-z-]*:backup:", var.backup_copy_vault_arn))
    error_message = "backup_copy_vault_arn must be an AWS Backup vault ARN."
  }
}

variable "enable_backup_vault_lock" {
  type        = bool
  description = "Lock the backup vault (governance mode): recovery points cannot be deleted early."
  default     = false
}

variable "monthly_budget_usd" {
  type        = number
  description = "Monthly cost budget in USD for everything tagged Project = project; 0: no budget. The Project tag must be an active cost allocation tag."
  default     = 1000

  validation {
    condition     = var.monthly_budget_usd >= 0
    error_message = "monthly_budget_usd must not be negative."
  }
}

variable "budget_alert_emails" {
  type        = list(string)
  description = "E-mail addresses Budgets writes to directly (besides the alarm topic)."
  default     = []
}
