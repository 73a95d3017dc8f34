# Kiln on ECS Fargate (ARM64), behind the ALB.

# --- Image registry ---

resource "aws_ecr_repository" "kiln" {
  name                 = local.name
  image_tag_mutability = "IMMUTABLE" # a tag names one image forever: deploys are reproducible

  image_scanning_configuration {
    scan_on_push = true
  }

  encryption_configuration {
    encryption_type = "KMS"
    kms_key         = aws_kms_key.data.arn
  }
}

resource "aws_ecr_lifecycle_policy" "kiln" {
  repository = aws_ecr_repository.kiln.name
  policy = jsonencode({
    rules = [
      {
        rulePriority = 1
        description  = "Drop untagged images (failed pushes, superseded layers) after 7 days"
        selection = {
          tagStatus   = "untagged"
          countType   = "sinceImagePushed"
          countUnit   = "days"
          countNumber = 7
        }
        action = { type = "expire" }
      },
      {
        rulePriority = 2
        description  = "Keep the last ${var.ecr_keep_images} images for rollbacks"
        selection = {
          tagStatus   = "any"
          countType   = "imageCountMoreThan"
          countNumber = var.ecr_keep_images
        }
        action = { type = "expire" }
      },
    ]
  })
}

# --- Cluster ---

# Container Insights writes here; created first so that it gets our
# retention and key instead of the service's defaults.
resource "aws_cloudwatch_log_group" "container_insights" {
  name              = "/aws/ecs/containerinsights/${local.cluster_name}/performance"
  retention_in_days = var.log_retention_days
  kms_key_id        = aws_kms_key.logs.arn
}

resource "aws_ecs_cluster" "main" {
  name = local.cluster_name

  setting {
    name  = "containerInsights"
    value = "enabled"
  }

  depends_on = [aws_cloudwatch_log_group.container_insights]
}

resource "aws_ecs_cluster_capacity_providers" "main" {
  cluster_name       = aws_ecs_cluster.main.name
  capacity_providers = ["FARGATE"]

  default_capacity_provider_strategy {
    capacity_provider = "FARGATE"
    weight            = 1
  }
}

resource "aws_cloudwatch_log_group" "app" {
  name              = "/ecs/${local.name}/kiln"
  retention_in_days = var.log_retention_days
  kms_key_id        = aws_kms_key.logs.arn
}

# --- Task definition ---
# One task definition serves both the service (`kiln serve`, the image's
# default command) and migrations: the deploy script runs it as a one-off
# task with the command overridden to ["migrate"] before updating the
# service (outputs: migration_task_overrides, run_task_network_configuration).

resource "aws_ecs_task_definition" "kiln" {
  family                   = local.task_family
  requires_compatibilities = ["FARGATE"]
  network_mode             = "awsvpc"
  cpu                      = var.task_cpu
  memory                   = var.task_memory
  execution_role_arn       = aws_iam_role.task_execution.arn
  task_role_arn            = aws_iam_role.task.arn

  runtime_platform {
    cpu_architecture        = "ARM64"
    operating_system_family = "LINUX"
  }

  container_definitions = jsonencode([
    {
      name      = local.container_name
      image     = "${aws_ecr_repository.kiln.repository_url}:${var.image_tag}"
      essential = true

      # The image's `kiln` user (uid/gid 10001); nothing runs as root, and
      # the root filesystem is read-only (Kiln writes no files in
      # production: PostgreSQL, Valkey and S3 hold all state).
      user                   = "10001:10001"
      readonlyRootFilesystem = true
      linuxParameters = {
        capabilities = { drop = ["ALL"] }
      }

      portMappings = [
        {
          name          = "https"
          containerPort = local.container_port
          protocol      = "tcp"
        },
      ]

      environment = [
        for name, value in merge(local.container_env, local.app_secret_env) : { name = name, value = value }
        if value != null
      ]

      # Liveness only (GET /livez, no store checks): a database outage must
      # not make ECS kill every task. Readiness is the ALB's /readyz.
      healthCheck = {
        command     = ["CMD", "/usr/local/bin/kiln", "healthcheck"]
        interval    = 15
        timeout     = 5
        retries     = 3
        startPeriod = 30
      }

      # SIGTERM, then this long before SIGKILL: above Kiln's own drain time
      # (SHUTDOWN_TIMEOUT_SECONDS), so Kiln always exits on its own.
      stopTimeout = var.container_stop_timeout

      ulimits = [
        { name = "nofile", softLimit = 65536, hardLimit = 65536 },
      ]

      logConfiguration = {
        logDriver = "awslogs"
        options = {
          awslogs-group         = aws_cloudwatch_log_group.app.name
          awslogs-region        = local.region
          awslogs-stream-prefix = "kiln"
          # A slow log pipe must never block request handling.
          mode            = "non-blocking"
          max-buffer-size = "25m"
        }
      }
    },
  ])

  lifecycle {
    precondition {
      condition     = var.container_stop_timeout > var.shutdown_timeout_seconds
      error_message = "container_stop_timeout must exceed shutdown_timeout_seconds, or ECS kills Kiln in the middle of its drain."
    }
    precondition {
      condition     = var.deregistration_delay >= var.shutdown_timeout_seconds
      error_message = "deregistration_delay must be at least shutdown_timeout_seconds, so that the ALB waits for the requests Kiln would finish."
    }
  }
}

# --- Service ---

resource "aws_ecs_service" "kiln" {
  name                    = local.service_name
  cluster                 = aws_ecs_cluster.main.id
  task_definition         = aws_ecs_task_definition.kiln.arn
  desired_count           = var.min_capacity
  launch_type             = "FARGATE"
  platform_version        = "LATEST"
  propagate_tags          = "SERVICE"
  enable_ecs_managed_tags = true

  deployment_minimum_healthy_percent = 100
  deployment_maximum_percent         = 200
  health_check_grace_period_seconds  = 60

  # A deployment whose tasks never become healthy rolls back by itself.
  deployment_circuit_breaker {
    enable   = true
    rollback = true
  }

  network_configuration {
    subnets          = aws_subnet.private[*].id
    security_groups  = [aws_security_group.tasks.id]
    assign_public_ip = false
  }

  load_balancer {
    target_group_arn = aws_lb_target_group.app.arn
    container_name   = local.container_name
    container_port   = local.container_port
  }

  lifecycle {
    # Auto scaling owns the task count. The deploy script owns which
    # revision runs: it registers nothing itself, but runs migrations with
    # the revision Terraform registered and only then moves the service to
    # it (README.md, Deploying).
    ignore_changes = [desired_count, task_definition]
  }

  # The first rotation writes the secrets' first values; tasks started
  # before it would fail to read them.
  depends_on = [
    aws_lb_listener.https,
    aws_secretsmanager_secret_rotation.rotation,
  ]
}

# --- Auto scaling ---

resource "aws_appautoscaling_target" "kiln" {
  service_namespace  = "ecs"
  resource_id        = "service/${aws_ecs_cluster.main.name}/${aws_ecs_service.kiln.name}"
  scalable_dimension = "ecs:service:DesiredCount"
  min_capacity       = var.min_capacity
  max_capacity       = var.max_capacity
}

resource "aws_appautoscaling_policy" "cpu" {
  name               = "${local.name}-cpu"
  policy_type        = "TargetTrackingScaling"
  service_namespace  = aws_appautoscaling_target.kiln.service_namespace
  resource_id        = aws_appautoscaling_target.kiln.resource_id
  scalable_dimension = aws_appautoscaling_target.kiln.scalable_dimension

  target_tracking_scaling_policy_configuration {
    predefined_metric_specification {
      predefined_metric_type = "ECSServiceAverageCPUUtilization"
    }
    target_value       = var.cpu_target_percent
    scale_in_cooldown  = 300
    scale_out_cooldown = 60
  }
}

resource "aws_appautoscaling_policy" "requests" {
  name               = "${local.name}-requests"
  policy_type        = "TargetTrackingScaling"
  service_namespace  = aws_appautoscaling_target.kiln.service_namespace
  resource_id        = aws_appautoscaling_target.kiln.resource_id
  scalable_dimension = aws_appautoscaling_target.kiln.scalable_dimension

  target_tracking_scaling_policy_configuration {
    predefined_metric_specification {
      predefined_metric_type = "ALBRequestCountPerTarget"
      resource_label         = "${aws_lb.main.arn_suffix}/${aws_lb_target_group.app.arn_suffix}"
    }
    target_value       = var.requests_per_target
    scale_in_cooldown  = 300
    scale_out_cooldown = 60
  }
}
