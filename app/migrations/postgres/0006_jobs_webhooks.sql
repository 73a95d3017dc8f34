-- Background jobs and webhooks (docs/JOBS.md, docs/WEBHOOKS.md).
--
-- jobs: the queue. A row is queued (waiting for run_at), running (claimed
-- by locked_by until lease_until, renewed while it runs), done or dead.
-- Claims take the oldest due rows FOR UPDATE SKIP LOCKED in one statement
-- (jobs/jobs.c), so any number of instances share the queue without
-- waiting on each other, through a transaction-mode pooler too.
CREATE TABLE jobs (
    id              bigserial PRIMARY KEY,
    kind            text NOT NULL,
    args            text NOT NULL DEFAULT '{}',
    state           text NOT NULL DEFAULT 'queued'
                    CHECK (state IN ('queued', 'running', 'done', 'dead')),
    run_at          timestamptz NOT NULL DEFAULT now(),
    attempts        integer NOT NULL DEFAULT 0,
    max_attempts    integer NOT NULL DEFAULT 10,
    lease_until     timestamptz,
    locked_by       text,
    idempotency_key text,
    last_error      text,
    inserted_at     timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    finished_at     timestamptz
);

-- Each index below serves one reader: the claim (due queued rows, oldest
-- first), the lease sweep (running rows past their lease), the pruning
-- (ended rows by age) and the idempotency check.
CREATE INDEX jobs_due_idx ON jobs (run_at, id) WHERE state = 'queued';
CREATE INDEX jobs_lease_idx ON jobs (lease_until) WHERE state = 'running';
CREATE INDEX jobs_finished_idx ON jobs (finished_at) WHERE state IN ('done', 'dead');
CREATE UNIQUE INDEX jobs_idempotency_idx ON jobs (kind, idempotency_key)
    WHERE idempotency_key IS NOT NULL;

-- webhooks: a user's endpoints. events is a JSON array of patterns
-- ("notes.created", "tasks.*", "*"). secret signs every delivery
-- (Standard Webhooks); after a rotation previous_secret signs alongside it
-- until previous_expires_at. failing_since is when the endpoint's current
-- run of failures began (NULL after a success): an endpoint failing for
-- longer than the retry schedule is disabled, with disabled_reason.
CREATE TABLE webhooks (
    id                  uuid PRIMARY KEY,
    user_id             uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    url                 text NOT NULL,
    events              text NOT NULL,
    description         text NOT NULL DEFAULT '',
    secret              text NOT NULL,
    previous_secret     text,
    previous_expires_at timestamptz,
    enabled             boolean NOT NULL DEFAULT true,
    disabled_reason     text,
    failing_since       timestamptz,
    inserted_at         timestamptz NOT NULL,
    updated_at          timestamptz NOT NULL
);

CREATE INDEX webhooks_user_idx ON webhooks (user_id, inserted_at DESC, id DESC);

-- One message to one endpoint (an event, a test, or a retry asked for by
-- hand), and its attempts. msg_id is the webhook-id header: the same on
-- every attempt, so a receiver can drop a repeat.
CREATE TABLE webhook_deliveries (
    id          bigserial PRIMARY KEY,
    webhook_id  uuid NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,
    event_id    bigint,
    msg_id      text NOT NULL,
    type        text NOT NULL,
    payload     text NOT NULL,
    state       text NOT NULL DEFAULT 'pending'
                CHECK (state IN ('pending', 'succeeded', 'failed')),
    attempts    integer NOT NULL DEFAULT 0,
    inserted_at timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX webhook_deliveries_webhook_idx ON webhook_deliveries (webhook_id, id DESC);
CREATE UNIQUE INDEX webhook_deliveries_event_idx ON webhook_deliveries (webhook_id, event_id)
    WHERE event_id IS NOT NULL;
CREATE INDEX webhook_deliveries_inserted_brin ON webhook_deliveries USING brin (inserted_at);

CREATE TABLE webhook_attempts (
    id          bigserial PRIMARY KEY,
    delivery_id bigint NOT NULL REFERENCES webhook_deliveries (id) ON DELETE CASCADE,
    at          timestamptz NOT NULL DEFAULT now(),
    status      integer,
    latency_ms  integer,
    error       text
);

CREATE INDEX webhook_attempts_delivery_idx ON webhook_attempts (delivery_id, id);

-- Where the dispatcher is in the events outbox: events after (tx, id) have
-- not been turned into deliveries yet. One row; the dispatcher that holds
-- its lock is the only one working.
CREATE TABLE webhook_cursor (
    id  integer PRIMARY KEY CHECK (id = 1),
    tx  bigint NOT NULL,
    eid bigint NOT NULL
);

INSERT INTO webhook_cursor (id, tx, eid) VALUES (1, 0, 0);
