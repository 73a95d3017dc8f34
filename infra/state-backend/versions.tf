# Bootstrap stack: the S3 bucket and DynamoDB table that hold every other
# stack's Terraform state. Its own state stays local (commit nothing of it;
# keep terraform.tfstate somewhere safe or import the two resources again).
terraform {
  required_version = ">= 1.6.0, < 2.0.0"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = "~> 5.90"
    }
  }
}
