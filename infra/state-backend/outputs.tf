output "state_bucket" {
  description = "S3 bucket holding Terraform state."
  value       = aws_s3_bucket.state.bucket
}

output "lock_table" {
  description = "DynamoDB table holding Terraform state locks."
  value       = aws_dynamodb_table.lock.name
}

output "kms_key_arn" {
  description = "KMS key encrypting the state objects and the lock table."
  value       = aws_kms_key.state.arn
}

# The main stack's backend settings, ready for `terraform init
# -backend-config=backend.hcl` (the key, one per environment, is passed
# separately; see infra/README.md).
output "backend_config" {
  description = "Contents of infra/backend.hcl."
  value       = <<-EOT
    bucket         = "${aws_s3_bucket.state.bucket}"
    region         = "${local.region}"
    dynamodb_table = "${aws_dynamodb_table.lock.name}"
    kms_key_id     = "${aws_kms_key.state.arn}"
    encrypt        = true
  EOT
}
