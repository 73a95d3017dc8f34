variable "project" {
  type        = string
  description = "Project name; must equal the main stack's `project` (the backend names derive from it). Lower case, at most 12 characters."
  default     = "kiln"

  validation {
    condition     = can(regex("^[a-z][a-z0-9]*(-[a-z0-9]+)*$", var.project)) && length(var.project) <= 12
    error_message = "project: lower-case letters, digits and single inner hyphens, starting with a letter, at most 12 characters."
  }
}

variable "aws_region" {
  type        = string
  description = "Region of the state bucket and lock table (the main stacks' backend region)."

  validation {
    condition     = can(regex("^[a-z]{2}(-[a-z]+)+-[0-9]$", var.aws_region))
    error_message = "aws_region must be a region code such as eu-west-1."
  }
}

variable "allowed_account_ids" {
  type        = list(string)
  description = "If set, the provider refuses to run against any other AWS account."
  default     = null
}

variable "extra_tags" {
  type        = map(string)
  description = "More tags for every resource."
  default     = {}
}

variable "noncurrent_state_days" {
  type        = number
  description = "Days superseded state versions are kept (to recover from a bad apply)."
  default     = 365

  validation {
    condition     = var.noncurrent_state_days >= 30
    error_message = "Keep old state versions at least 30 days."
  }
}
