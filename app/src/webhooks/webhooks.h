/*
 * Webhooks: a user's endpoints receive their events (the change feed's
 * outbox) as signed HTTP POSTs, following the Standard Webhooks
 * specification (docs/WEBHOOKS.md is the contract).
 *
 * The dispatcher (a jobs pump, jobs/jobs.h) reads the outbox after a
 * cursor kept in the database (webhook_cursor), in commit order (the
 * feed's horizon: an event that commits late is never skipped), and turns
 * each event that matches an enabled endpoint of its owner into a delivery
 * row and a webhooks.deliver job, in one transaction with the cursor's
 * move: each (event, endpoint) is delivered, never lost, never twice
 * enqueued. One instance dispatches at a time (the cursor row's lock).
 *
 * A delivery job resolves the endpoint's host once, refuses special
 * addresses (core/egress.h), POSTs to the checked address, records the
 * attempt, and retries timeouts, connection errors, 429 and 5xx on
 * WEBHOOK_RETRY_SCHEDULE; other answers fail the delivery at once. An
 * endpoint whose deliveries have all failed for longer than the whole
 * schedule is disabled, with the reason.
 *
 * Order: deliveries are made, and their jobs enqueued, in the feed's
 * commit order, and jobs are claimed oldest first (run_at, id), so first
 * attempts start in that order. Up to JOB_CONCURRENCY run at once, to one
 * endpoint as to several, so they may arrive in another order; a retry
 * waits out its delay behind later events (no head-of-line blocking).
 * Only with JOB_CONCURRENCY=1 do first attempts arrive in commit order.
 * (app/tests/http/test_webhooks.py tests each of these.)
 */
#ifndef KILN_WEBHOOKS_WEBHOOKS_H
#define KILN_WEBHOOKS_WEBHOOKS_H

#include <stdbool.h>
#include <stddef.h>

#include "core/arena.h"
#include "core/buf.h"
#include "core/str.h"
#include "core/config.h"
#include "store/db.h"

#define KILN_WEBHOOK_MAX_PATTERNS 50
#define KILN_WEBHOOK_MAX_DESCRIPTION 1000
#define KILN_WEBHOOKS_PER_USER 50
/* whsec_ and the base64 of 32 random bytes */
#define KILN_WEBHOOK_SECRET_BYTES 32
#define KILN_WEBHOOK_SECRET_LEN (6 + 44)
/* A rotated secret keeps signing alongside the new one this long. */
#define KILN_WEBHOOK_PREVIOUS_SECRET_MS (24ull * 3600 * 1000)
/* What a receiver's answer is read up to (and kept of it in an attempt). */
#define KILN_WEBHOOK_MAX_RESPONSE (64 * 1024)
#define KILN_WEBHOOK_MAX_ERROR 500
/* Deliveries one runner takes at once (one read, one record for all), and
 * how long a batch starts new ones before it hands the rest back. */
#define KILN_WEBHOOK_BATCH 16
#define KILN_WEBHOOK_BATCH_MS 2000

/* An event's stored data as the API shows the row, into out (the change
 * feed's render: api/engine.c); false: the data as stored. */
typedef bool (*kiln_webhook_render_fn)(const char *resource, kiln_str data, kiln_buf *out);

/* Register the job kinds and the dispatcher (before kiln_jobs_start). */
void kiln_webhooks_init(const struct kiln_config *cfg, kiln_webhook_render_fn render);

/* An endpoint was made or turned on: the dispatcher looks at once
 * (while none is enabled it looks only at the poll). Any thread. */
void kiln_webhooks_changed(void);

/* A new secret ("whsec_" + base64 of 32 random bytes) into out. */
int kiln_webhook_new_secret(char out[KILN_WEBHOOK_SECRET_LEN + 1]);

/*
 * The webhook-signature header's value for one message: "v1,<base64 of
 * HMAC-SHA256(key, msg_id.timestamp.body)>" for the secret, and a second,
 * space-separated, for previous (may be NULL). false if a secret is not a
 * whsec_ one.
 */
bool kiln_webhook_sign(kiln_arena *a, const char *secret, const char *previous,
                       const char *msg_id, long long timestamp, const char *body, size_t len,
                       const char **out);

/* Whether an event type ("notes.created") matches one pattern ("notes.*",
 * "*", "notes.created"). */
bool kiln_webhook_pattern_matches(const char *pattern, const char *type);

/* Enqueue a delivery of an existing delivery row again (a retry asked for
 * by hand) or of a new test message, inside the caller's transaction.
 * 0 or the database's error. */
int kiln_webhook_enqueue_delivery(struct kiln_db *db, kiln_arena *a, long long delivery_id);

#endif
