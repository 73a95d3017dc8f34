/* ElastiCache ModifyUser (passwords); see elasticache.h. */
#include "aws/elasticache.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "aws/aws.h"
#include "aws/sigv4.h"
#include "core/err.h"

/* The text of the first <tag>…</tag> in xml into out (cap bytes); false when
 * absent. AWS's Query errors: <ErrorResponse><Error><Code>…</Code>
 * <Message>…</Message></Error></ErrorResponse>. */
static bool xml_text(const char *xml, const char *tag, char *out, size_t cap)
{
    char open[64], close[64];
    snprintf(open, sizeof open, "<%s>", tag);
    snprintf(close, sizeof close, "</%s>", tag);
    const char *a = xml ? strstr(xml, open) : NULL;
    if (!a)
        return false;
    a += strlen(open);
    const char *b = strstr(a, close);
    if (!b)
        return false;
    size_t n = (size_t)(b - a);
    if (n >= cap)
        n = cap - 1;
    memcpy(out, a, n);
    out[n] = '\0';
    for (char *c = out; *c; c++)
        if ((unsigned char)*c < 0x20)
            *c = ' ';
    return true;
}

int kiln_elasticache_set_passwords(const char *user_id, const char *const *passwords, size_t n,
                                   char *err, size_t errcap)
{
    char url[512];
    const char *region = kiln_aws_region();
    if (!user_id || !*user_id || n < 1 || n > 2) {
        snprintf(err, errcap, "ElastiCache ModifyUser: a user id and one or two passwords");
        return KILN_EINVAL;
    }
    if (kiln_aws_endpoint("ELASTICACHE", "elasticache", region, url, sizeof url - 1) != 0) {
        snprintf(err, errcap, "ElastiCache: no region (AWS_REGION) and no endpoint");
        return KILN_EINVAL;
    }
    strcat(url, "/");

    kiln_buf body;
    kiln_buf_init(&body, 64 * 1024);
    kiln_buf_append_c(&body, "Action=ModifyUser&Version=2015-02-02&UserId=");
    kiln_uri_encode(&body, user_id, strlen(user_id), false);
    for (size_t i = 0; i < n; i++) {
        kiln_buf_printf(&body, "&Passwords.member.%zu=", i + 1);
        kiln_uri_encode(&body, passwords[i], strlen(passwords[i]), false);
    }
    struct kiln_aws_call call = {
        .service = "elasticache", .region = region, .method = "POST", .url = url,
        .body = body.p, .body_len = body.len,
        .content_type = "application/x-www-form-urlencoded; charset=utf-8",
        .timeout_ms = 15000, .max_body = 1u << 20,
    };
    struct kiln_http_response res;
    int rc = kiln_aws_request(&call, &res, err, errcap);
    explicit_bzero(body.p, body.len);
    kiln_buf_free(&body);
    if (rc) {
        kiln_http_response_free(&res);
        return rc == KILN_EINVAL ? rc : KILN_EUNAVAILABLE;
    }
    if (res.status != 200) {
        char code[128] = "", msg[512] = "";
        xml_text(res.body.p, "Code", code, sizeof code);
        xml_text(res.body.p, "Message", msg, sizeof msg);
        snprintf(err, errcap, "ElastiCache answered %ld%s%s%s%s", res.status, code[0] ? " " : "",
                 code, msg[0] ? ": " : "", msg);
        rc = strstr(code, "UserNotFound")        ? KILN_ENOTFOUND
             : strstr(code, "InvalidUserState") ? KILN_EBUSY
             : strstr(code, "InvalidParameter") ? KILN_EINVAL
                                                : KILN_EUNAVAILABLE;
    }
    kiln_http_response_free(&res);
    return rc;
}
