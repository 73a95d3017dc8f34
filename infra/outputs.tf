# What the deploy script, operators and other stacks need.

output "public_url" {
  description = "The API's public origin (PUBLIC_URL)."
  value       = local.public_url
}

output "alb_dns_name" {
  description = "ALB DNS name (point domain_name here, or at the accelerator, when DNS is managed elsewhere)."
  value       = aws_lb.main.dns_name
}

output "global_accelerator_dns_name" {
  description = "Global Accelerator DNS name, or null when disabled."
  value       = one(aws_globalaccelerator_accelerator.main[*].dns_name)
}

output "global_accelerator_ips" {
  description = "The accelerator's two static anycast addresses, or an empty list when disabled."
  value       = flatten([for a in aws_globalaccelerator_accelerator.main : a.ip_sets[*].ip_addresses])
}

output "ecr_repository_url" {
  description = "ECR repository to push the Kiln image to (tags are immutable)."
  value       = aws_ecr_repository.kiln.repository_url
}

output "ecs_cluster_name" {
  description = "ECS cluster name."
  value       = aws_ecs_cluster.main.name
}

output "ecs_service_name" {
  description = "ECS service name."
  value       = aws_ecs_service.kiln.name
}

output "task_definition_family" {
  description = "Task definition family (serve and migrate share it)."
  value       = aws_ecs_task_definition.kiln.family
}

output "task_definition_arn" {
  description = "The revision Terraform registered last: run migrations with it, then move the service to it."
  value       = aws_ecs_task_definition.kiln.arn
}

output "container_name" {
  description = "Container name in the task definition (for command overrides)."
  value       = local.container_name
}

output "migration_task_overrides" {
  description = "ECS run-task --overrides for the one-off migration task (`kiln migrate`), as JSON."
  value = jsonencode({
    containerOverrides = [{ name = local.container_name, command = ["migrate"] }]
  })
}

output "private_subnet_ids" {
  description = "Private subnets (tasks, one-off migration task)."
  value       = aws_subnet.private[*].id
}

output "public_subnet_ids" {
  description = "Public subnets (ALB, NAT)."
  value       = aws_subnet.public[*].id
}

output "tasks_security_group_id" {
  description = "Security group of the Kiln tasks (also for the migration task)."
  value       = aws_security_group.tasks.id
}

output "run_task_network_configuration" {
  description = "ECS run-task --network-configuration for the migration task, as JSON."
  value = jsonencode({
    awsvpcConfiguration = {
      subnets        = aws_subnet.private[*].id
      securityGroups = [aws_security_group.tasks.id]
      assignPublicIp = "DISABLED"
    }
  })
}

output "app_log_group_name" {
  description = "CloudWatch log group of the Kiln containers."
  value       = aws_cloudwatch_log_group.app.name
}

output "db_proxy_endpoint" {
  description = "RDS Proxy endpoint (DB_HOST)."
  value       = aws_db_proxy.main.endpoint
}

output "db_cluster_endpoint" {
  description = "Aurora writer endpoint (operators only; Kiln goes through the proxy)."
  value       = aws_rds_cluster.main.endpoint
}

output "db_master_secret_arn" {
  description = "Secret of the Aurora master user (RDS format; for the DB rotation function and break-glass access)."
  value       = aws_secretsmanager_secret.db_master.arn
}

output "valkey_endpoint" {
  description = "Valkey serverless endpoint (VALKEY_HOST)."
  value       = aws_elasticache_serverless_cache.main.endpoint[0].address
}

output "uploads_bucket" {
  description = "Uploads bucket (UPLOADS_BUCKET)."
  value       = aws_s3_bucket.uploads.bucket
}

output "secret_arns" {
  description = "Secrets of this stack, by purpose."
  value = {
    secret_key_base = aws_secretsmanager_secret.secret_key_base.arn
    db_app_user     = aws_secretsmanager_secret.db_app.arn
    valkey_ops_user = aws_secretsmanager_secret.valkey_ops.arn
  }
}

output "alarm_topic_arn" {
  description = "SNS topic of every alarm (subscribe on-call tooling here)."
  value       = aws_sns_topic.alarms.arn
}

output "dashboard_name" {
  description = "CloudWatch dashboard."
  value       = aws_cloudwatch_dashboard.main.dashboard_name
}
