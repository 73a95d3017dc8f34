/*
 * Handlers of the public API, one file per resource, all listed in the one
 * route table (routes.c). A handler reads its input from the request, calls
 * the stores, and writes JSON with the response helpers; it never touches a
 * socket, libpq or RESP.
 */
#ifndef KILN_API_H
#define KILN_API_H

#include <stddef.h>

#include "http/request.h"
#include "http/response.h"
#include "http/router.h"

/* The route table (routes.c). */
extern const struct kiln_route kiln_routes[];
extern const size_t kiln_routes_count;

/* health.c */
void api_root(struct kiln_req *req, struct kiln_res *res);
void api_livez(struct kiln_req *req, struct kiln_res *res);
void api_readyz(struct kiln_req *req, struct kiln_res *res);
void api_healthz(struct kiln_req *req, struct kiln_res *res);
void api_test_sleep(struct kiln_req *req, struct kiln_res *res);

/* auth.c */
void api_auth_request(struct kiln_req *req, struct kiln_res *res);
void api_auth_callback(struct kiln_req *req, struct kiln_res *res);
void api_auth_logout(struct kiln_req *req, struct kiln_res *res);
void api_dev_login(struct kiln_req *req, struct kiln_res *res);
void api_me(struct kiln_req *req, struct kiln_res *res);
void api_test_protected(struct kiln_req *req, struct kiln_res *res);

/* notes.c */
void api_notes_list(struct kiln_req *req, struct kiln_res *res);
void api_notes_show(struct kiln_req *req, struct kiln_res *res);
void api_notes_create(struct kiln_req *req, struct kiln_res *res);
void api_notes_update(struct kiln_req *req, struct kiln_res *res);
void api_notes_delete(struct kiln_req *req, struct kiln_res *res);
void api_notes_archive(struct kiln_req *req, struct kiln_res *res);
void api_notes_unarchive(struct kiln_req *req, struct kiln_res *res);

#endif
