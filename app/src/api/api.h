/*
 * Handlers of the public API, one file per resource, all listed in the one
 * route table (routes.c). A handler reads its input from the request, calls
 * the stores, and writes JSON with the response helpers; it never touches a
 * socket, libpq or RESP.
 */
#ifndef KILN_API_H
#define KILN_API_H

#include <jansson.h>
#include <stddef.h>

#include "http/request.h"
#include "http/response.h"
#include "http/router.h"
#include "store/db.h"

struct kiln_env_reader;

/* The route table (routes.c): the hand-written routes and every declared
 * resource's, built once, shared by every thread. */
const struct kiln_route *api_routes(size_t *n);

/* health.c */
void api_root(struct kiln_req *req, struct kiln_res *res);
void api_livez(struct kiln_req *req, struct kiln_res *res);
void api_readyz(struct kiln_req *req, struct kiln_res *res);
void api_healthz(struct kiln_req *req, struct kiln_res *res);
void api_test_sleep(struct kiln_req *req, struct kiln_res *res);

/* openapi.c */
void api_openapi(struct kiln_req *req, struct kiln_res *res);
void api_docs(struct kiln_req *req, struct kiln_res *res);

/* auth.c */
void api_auth_request(struct kiln_req *req, struct kiln_res *res);
void api_auth_callback(struct kiln_req *req, struct kiln_res *res);
void api_auth_logout(struct kiln_req *req, struct kiln_res *res);
void api_dev_login(struct kiln_req *req, struct kiln_res *res);
void api_me(struct kiln_req *req, struct kiln_res *res);
void api_test_protected(struct kiln_req *req, struct kiln_res *res);

/* profile.c */
void api_profile(struct kiln_req *req, struct kiln_res *res);
void api_dashboard(struct kiln_req *req, struct kiln_res *res);

/*
 * uploads.c. api_uploads_setup reads UPLOADS_* and AWS_REGION through e at
 * start (problems reported through e), on the main thread before any
 * request; api_uploads_free at exit.
 */
void api_uploads_setup(struct kiln_env_reader *e);
void api_uploads_free(void);
void api_uploads_presign(struct kiln_req *req, struct kiln_res *res);
void api_uploads_list(struct kiln_req *req, struct kiln_res *res);
void api_uploads_types(struct kiln_req *req, struct kiln_res *res);
void api_uploads_show(struct kiln_req *req, struct kiln_res *res);
void api_uploads_download(struct kiln_req *req, struct kiln_res *res);
void api_uploads_delete(struct kiln_req *req, struct kiln_res *res);

#endif
