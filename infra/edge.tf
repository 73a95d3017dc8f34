# Internet edge: Global Accelerator (optional) -> ALB (TLS 1.3 policy) ->
# tasks over HTTPS on 8443.

# --- Certificate ---
# Either bring a certificate (var.certificate_arn) or let ACM issue one,
# validated through the Route 53 zone var.route53_zone_id.

resource "aws_acm_certificate" "main" {
  count = var.certificate_arn == null ? 1 : 0

  domain_name       = var.domain_name
  validation_method = "DNS"

  lifecycle {
    create_before_destroy = true
  }
}

resource "aws_route53_record" "certificate_validation" {
  for_each = var.certificate_arn == null && var.route53_zone_id != null ? {
    for o in aws_acm_certificate.main[0].domain_validation_options : o.domain_name => o
  } : {}

  zone_id         = var.route53_zone_id
  name            = each.value.resource_record_name
  type            = each.value.resource_record_type
  records         = [each.value.resource_record_value]
  ttl             = 300
  allow_overwrite = true
}

resource "aws_acm_certificate_validation" "main" {
  count = var.certificate_arn == null && var.route53_zone_id != null ? 1 : 0

  certificate_arn         = aws_acm_certificate.main[0].arn
  validation_record_fqdns = [for r in aws_route53_record.certificate_validation : r.fqdn]
}

locals {
  certificate_arn = var.certificate_arn != null ? var.certificate_arn : one(aws_acm_certificate_validation.main[*].certificate_arn)
}

# --- ALB access logs ---
# ALB log delivery cannot write with a customer managed KMS key: the bucket
# uses SSE-S3 (AES256), and holds nothing but access logs.

resource "aws_s3_bucket" "alb_logs" {
  bucket = "${local.short_name}-alb-logs-${local.bucket_suffix}"
}

resource "aws_s3_bucket_ownership_controls" "alb_logs" {
  bucket = aws_s3_bucket.alb_logs.id
  rule {
    object_ownership = "BucketOwnerEnforced"
  }
}

resource "aws_s3_bucket_public_access_block" "alb_logs" {
  bucket                  = aws_s3_bucket.alb_logs.id
  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_s3_bucket_server_side_encryption_configuration" "alb_logs" {
  bucket = aws_s3_bucket.alb_logs.id
  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm = "AES256"
    }
  }
}

resource "aws_s3_bucket_versioning" "alb_logs" {
  bucket = aws_s3_bucket.alb_logs.id
  versioning_configuration {
    status = "Enabled"
  }
}

resource "aws_s3_bucket_lifecycle_configuration" "alb_logs" {
  bucket = aws_s3_bucket.alb_logs.id

  rule {
    id     = "expire-access-logs"
    status = "Enabled"
    filter {}
    expiration {
      days = var.alb_log_retention_days
    }
    noncurrent_version_expiration {
      noncurrent_days = 7
    }
    abort_incomplete_multipart_upload {
      days_after_initiation = 1
    }
  }

  depends_on = [aws_s3_bucket_versioning.alb_logs]
}

data "aws_iam_policy_document" "alb_logs" {
  # Regions opened before August 2022 deliver from a regional ELB account.
  statement {
    sid       = "ElbAccountDelivers"
    actions   = ["s3:PutObject"]
    resources = ["${aws_s3_bucket.alb_logs.arn}/alb/AWSLogs/${local.account_id}/*"]
    principals {
      type        = "AWS"
      identifiers = [data.aws_elb_service_account.current.arn]
    }
  }

  # Newer regions (and, increasingly, all of them) use the service principal.
  statement {
    sid       = "LogDeliveryServiceDelivers"
    actions   = ["s3:PutObject"]
    resources = ["${aws_s3_bucket.alb_logs.arn}/alb/AWSLogs/${local.account_id}/*"]
    principals {
      type        = "Service"
      identifiers = ["logdelivery.elasticloadbalancing.amazonaws.com"]
    }
  }

  statement {
    sid     = "DenyInsecureTransport"
    effect  = "Deny"
    actions = ["s3:*"]
    resources = [
      aws_s3_bucket.alb_logs.arn,
      "${aws_s3_bucket.alb_logs.arn}/*",
    ]
    principals {
      type        = "*"
      identifiers = ["*"]
    }
    condition {
      test     = "Bool"
      variable = "aws:SecureTransport"
      values   = ["false"]
    }
  }
}

resource "aws_s3_bucket_policy" "alb_logs" {
  bucket = aws_s3_bucket.alb_logs.id
  policy = data.aws_iam_policy_document.alb_logs.json

  depends_on = [aws_s3_bucket_public_access_block.alb_logs]
}

# --- Load balancer ---

resource "aws_lb" "main" {
  name               = "${local.short_name}-alb"
  load_balancer_type = "application"
  internal           = false
  security_groups    = [aws_security_group.alb.id]
  subnets            = aws_subnet.public[*].id

  # Malformed header names are dropped rather than forwarded to Kiln.
  drop_invalid_header_fields = true
  # Kiln's keep-alive timeout (75 s) stays above this, so the ALB, not Kiln,
  # closes idle connections (the other order causes 502s).
  idle_timeout               = 60
  enable_deletion_protection = var.deletion_protection

  access_logs {
    bucket  = aws_s3_bucket.alb_logs.id
    prefix  = "alb"
    enabled = true
  }

  depends_on = [aws_s3_bucket_policy.alb_logs]
}

# Targets speak HTTPS with a self-signed certificate; the ALB encrypts to
# them but does not verify target certificates.
resource "aws_lb_target_group" "app" {
  name             = "${local.short_name}-https"
  port             = local.container_port
  protocol         = "HTTPS"
  protocol_version = "HTTP1"
  target_type      = "ip"
  vpc_id           = aws_vpc.main.id

  # How long the ALB lets in-flight requests finish after a task leaves the
  # target group, before ECS sends it SIGTERM. At least Kiln's own drain
  # time (SHUTDOWN_TIMEOUT_SECONDS), so a request the ALB still waits for is
  # one Kiln would also have finished (checked in service.tf).
  deregistration_delay = var.deregistration_delay

  # /readyz checks the database and Valkey and answers 503 while draining,
  # so a draining or cut-off task stops receiving traffic.
  health_check {
    enabled             = true
    protocol            = "HTTPS"
    port                = "traffic-port"
    path                = "/readyz"
    matcher             = "200"
    interval            = 15
    timeout             = 5
    healthy_threshold   = 2
    unhealthy_threshold = 3
  }
}

resource "aws_lb_listener" "http" {
  load_balancer_arn = aws_lb.main.arn
  port              = 80
  protocol          = "HTTP"

  default_action {
    type = "redirect"
    redirect {
      protocol    = "HTTPS"
      port        = "443"
      status_code = "HTTP_301"
    }
  }
}

resource "aws_lb_listener" "https" {
  load_balancer_arn = aws_lb.main.arn
  port              = 443
  protocol          = "HTTPS"
  ssl_policy        = var.alb_ssl_policy
  certificate_arn   = local.certificate_arn

  default_action {
    type             = "forward"
    target_group_arn = aws_lb_target_group.app.arn
  }

  lifecycle {
    precondition {
      condition     = var.certificate_arn != null || var.route53_zone_id != null
      error_message = "Set certificate_arn, or route53_zone_id so that ACM can validate a new certificate."
    }
  }
}

# --- Global Accelerator (optional) ---
# Two static anycast addresses in front of the ALB; client IP preservation
# keeps the real client address in X-Forwarded-For (TRUSTED_PROXY_HOPS=1).

resource "aws_globalaccelerator_accelerator" "main" {
  count = var.enable_global_accelerator ? 1 : 0

  name            = "${local.name}-ga"
  ip_address_type = "IPV4"
  enabled         = true
}

resource "aws_globalaccelerator_listener" "main" {
  count = var.enable_global_accelerator ? 1 : 0

  accelerator_arn = aws_globalaccelerator_accelerator.main[0].id
  protocol        = "TCP"
  client_affinity = "NONE"

  port_range {
    from_port = 80
    to_port   = 80
  }
  port_range {
    from_port = 443
    to_port   = 443
  }
}

resource "aws_globalaccelerator_endpoint_group" "main" {
  count = var.enable_global_accelerator ? 1 : 0

  listener_arn          = aws_globalaccelerator_listener.main[0].id
  endpoint_group_region = local.region

  endpoint_configuration {
    endpoint_id                    = aws_lb.main.arn
    client_ip_preservation_enabled = true
    weight                         = 100
  }
}

# --- DNS (when the zone is ours) ---
resource "aws_route53_record" "app" {
  count = var.route53_zone_id != null ? 1 : 0

  zone_id = var.route53_zone_id
  name    = var.domain_name
  type    = "A"

  alias {
    name                   = var.enable_global_accelerator ? aws_globalaccelerator_accelerator.main[0].dns_name : aws_lb.main.dns_name
    zone_id                = var.enable_global_accelerator ? aws_globalaccelerator_accelerator.main[0].hosted_zone_id : aws_lb.main.zone_id
    evaluate_target_health = true
  }
}
