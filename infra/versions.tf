terraform {
  # 1.11: ephemeral resources and write-only arguments, so that no secret
  # value Terraform generates is stored in state.
  required_version = ">= 1.11.0, < 2.0.0"

  required_providers {
    aws = {
      source = "hashicorp/aws"
      # 5.90+: ElastiCache users and user groups accept engine "valkey",
      # write-only master_password_wo and secret_string_wo, backup
      # lifecycles with opt_in_to_archive_for_supported_resources.
      version = "~> 5.90"
    }
    random = {
      source  = "hashicorp/random"
      version = "~> 3.7" # ephemeral random_password
    }
  }
}
