# Partial configuration: bucket, key, region, lock table and KMS key come
# from backend.hcl, written from the state-backend stack's output so the
# names can never drift (see backend.hcl.example and README.md):
#
#   terraform -chdir=state-backend output -raw backend_config > backend.hcl
#   terraform init -backend-config=backend.hcl \
#                  -backend-config="key=<project>/<environment>/terraform.tfstate"
#
# Backend blocks cannot read variables, which is why the values are not here.
terraform {
  backend "s3" {
    encrypt = true
  }
}
