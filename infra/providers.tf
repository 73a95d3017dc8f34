provider "aws" {
  region = var.aws_region

  # Refuse to run against the wrong account when the caller pins one.
  allowed_account_ids = var.allowed_account_ids

  # Every taggable resource gets these, so cost allocation (the budget's
  # Project filter) and ownership never depend on someone remembering a
  # tags block.
  default_tags {
    tags = merge(var.extra_tags, {
      Project     = var.project
      Environment = var.environment
      ManagedBy   = "terraform"
    })
  }
}

data "aws_caller_identity" "current" {}
data "aws_region" "current" {}
data "aws_partition" "current" {}

data "aws_availability_zones" "available" {
  state = "available"
  # Local Zones and Wavelength zones lack Aurora, NAT and Fargate.
  filter {
    name   = "opt-in-status"
    values = ["opt-in-not-required"]
  }
}

# The regional account that Elastic Load Balancing writes access logs from
# (older regions); newer regions use the log delivery service principal.
data "aws_elb_service_account" "current" {}
