/*
 * The OpenAPI 3.1 document of every route (app/docs/openapi.json, embedded
 * at build time by scripts/embed-docs.sh) and the page that renders it.
 * app/tests/unit/api_openapi.c fails when a route in routes.c has no entry
 * in the document or the document names a route that does not exist, and
 * the black-box suite checks every JSON response it receives against it.
 */
#include <stddef.h>

#include "api/api.h"

extern const char kiln__openapi_json[];
extern const size_t kiln__openapi_json_len;
extern const char kiln__docs_html[];
extern const size_t kiln__docs_html_len;

void api_openapi(struct kiln_req *req, struct kiln_res *res)
{
    (void)req;
    kiln_res_json_text(res, 200, (kiln_str){ kiln__openapi_json, kiln__openapi_json_len });
    kiln_res_header(res, "cache-control", "public, max-age=300");
}

void api_docs(struct kiln_req *req, struct kiln_res *res)
{
    (void)req;
    res->status = 200;
    res->content_type = KILN_STR("text/html; charset=utf-8");
    res->body = (kiln_str){ kiln__docs_html, kiln__docs_html_len };
    /* The page's own inline script and style, and fetches to this origin;
     * nothing else loads. */
    kiln_res_header(res, "content-security-policy",
                    "default-src 'none'; script-src 'unsafe-inline'; "
                    "style-src 'unsafe-inline'; connect-src 'self'; frame-ancestors 'none'");
    kiln_res_header(res, "cache-control", "public, max-age=300");
}
