/*
 * Amazon ECS, the one call a secret rotation needs: UpdateService with
 * forceNewDeployment (awsJson1.1, X-Amz-Target
 * AmazonEC2ContainerServiceV20141113.UpdateService, signing name "ecs"), so
 * that the service's tasks are replaced by new ones, which read their
 * secrets afresh at start.
 *
 * Endpoint: AWS_ENDPOINT_URL_ECS (read here, at each call, unless
 * AWS_IGNORE_CONFIGURED_ENDPOINT_URLS=true: aws.c's list of per-service
 * overrides does not name ECS), else kiln_aws_endpoint's AWS_ENDPOINT_URL or
 * https://ecs.<region>.amazonaws.com. Region: the cluster's ARN, else
 * AWS_REGION. Blocks (network): not for an event loop.
 */
#ifndef KILN_AWS_ECS_H
#define KILN_AWS_ECS_H

#include <stddef.h>

/*
 * Force a new deployment of service (name or ARN) in cluster (name or ARN).
 * The new deployment's id into deployment_out (cap bytes, may be NULL).
 * 0, or KILN_ENOTFOUND (ClusterNotFound/ServiceNotFound), KILN_EINVAL (no
 * region, bad arguments), KILN_EUNAVAILABLE (anything else); err says why.
 */
int kiln_ecs_force_deployment(const char *cluster, const char *service, char *deployment_out,
                              size_t cap, char *err, size_t errcap);

#endif
