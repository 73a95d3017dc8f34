/* ECS UpdateService (forceNewDeployment); see ecs.h. */
#include "aws/ecs.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <jansson.h>

#include "aws/aws.h"
#include "core/alloc.h"
#include "core/err.h"

/* AWS_ENDPOINT_URL_ECS and the rest: aws.c. */
static int endpoint(const char *region, char *url, size_t cap)
{
    return kiln_aws_endpoint("ECS", "ecs", region, url, cap);
}

int kiln_ecs_force_deployment(const char *cluster, const char *service, char *deployment_out,
                              size_t cap, char *err, size_t errcap)
{
    char region[64], url[512];
    if (deployment_out && cap)
        deployment_out[0] = '\0';
    if (!cluster || !*cluster || !service || !*service) {
        snprintf(err, errcap, "ECS: a cluster and a service are needed");
        return KILN_EINVAL;
    }
    if (!kiln_aws_arn_region(cluster, region, sizeof region) &&
        !kiln_aws_arn_region(service, region, sizeof region)) {
        const char *r = kiln_aws_region();
        if (!r) {
            snprintf(err, errcap, "ECS: no region: set AWS_REGION or use a cluster ARN");
            return KILN_EINVAL;
        }
        snprintf(region, sizeof region, "%s", r);
    }
    if (endpoint(region, url, sizeof url - 1) != 0) {
        snprintf(err, errcap, "ECS: no endpoint");
        return KILN_EINVAL;
    }
    strcat(url, "/");
    json_t *req = json_pack("{s:s, s:s, s:b}", "cluster", cluster, "service", service,
                            "forceNewDeployment", 1);
    char *body = json_dumps(req, JSON_COMPACT);
    json_decref(req);
    if (!body)
        kiln_fatal("out of memory");
    const struct kiln_sigv4_header h[] = {
        { "X-Amz-Target", "AmazonEC2ContainerServiceV20141113.UpdateService" },
    };
    struct kiln_aws_call call = {
        .service = "ecs", .region = region, .method = "POST", .url = url, .headers = h,
        .nheaders = 1, .body = body, .body_len = strlen(body),
        .content_type = "application/x-amz-json-1.1", .timeout_ms = 15000,
        .max_body = 4u << 20,
    };
    struct kiln_http_response res;
    int rc = kiln_aws_request(&call, &res, err, errcap);
    free(body);
    if (rc) {
        kiln_http_response_free(&res);
        return rc == KILN_EINVAL ? rc : KILN_EUNAVAILABLE;
    }
    json_t *doc = json_loadb(res.body.p ? res.body.p : "", res.body.len, 0, NULL);
    if (res.status != 200) {
        const char *type = json_string_value(json_object_get(doc, "__type"));
        const char *msg = json_string_value(json_object_get(doc, "message"));
        if (!msg)
            msg = json_string_value(json_object_get(doc, "Message"));
        const char *hash = type ? strrchr(type, '#') : NULL;
        snprintf(err, errcap, "ECS answered %ld%s%s%s%s", res.status, type ? " " : "",
                 type ? (hash ? hash + 1 : type) : "", msg ? ": " : "", msg ? msg : "");
        rc = type && (strstr(type, "ClusterNotFound") || strstr(type, "ServiceNotFound"))
                 ? KILN_ENOTFOUND
                 : KILN_EUNAVAILABLE;
    } else if (deployment_out && cap) {
        /* The PRIMARY deployment is the one just started. */
        json_t *deps = json_object_get(json_object_get(doc, "service"), "deployments"), *d;
        size_t i;
        json_array_foreach(deps, i, d) {
            const char *st = json_string_value(json_object_get(d, "status"));
            const char *id = json_string_value(json_object_get(d, "id"));
            if (st && id && strcmp(st, "PRIMARY") == 0) {
                snprintf(deployment_out, cap, "%s", id);
                break;
            }
        }
    }
    json_decref(doc);
    kiln_http_response_free(&res);
    return rc;
}
