-- Background jobs and webhooks (see postgres/0006). One process runs the
-- jobs of a SQLite database, so a claim is an UPDATE under the database's
-- single writer. Timestamps are RFC 3339 UTC text, which sorts in time
-- order.
CREATE TABLE jobs (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    kind            TEXT NOT NULL,
    args            TEXT NOT NULL DEFAULT '{}',
    state           TEXT NOT NULL DEFAULT 'queued'
                    CHECK (state IN ('queued', 'running', 'done', 'dead')),
    run_at          TEXT NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    max_attempts    INTEGER NOT NULL DEFAULT 10,
    lease_until     TEXT,
    locked_by       TEXT,
    idempotency_key TEXT,
    last_error      TEXT,
    inserted_at     TEXT NOT NULL,
    updated_at      TEXT NOT NULL,
    finished_at     TEXT
);

CREATE INDEX jobs_due_idx ON jobs (run_at, id) WHERE state = 'queued';
CREATE INDEX jobs_lease_idx ON jobs (lease_until) WHERE state = 'running';
CREATE INDEX jobs_finished_idx ON jobs (finished_at) WHERE state IN ('done', 'dead');
CREATE UNIQUE INDEX jobs_idempotency_idx ON jobs (kind, idempotency_key)
    WHERE idempotency_key IS NOT NULL;

CREATE TABLE webhooks (
    id                  TEXT PRIMARY KEY,
    user_id             TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    url                 TEXT NOT NULL,
    events              TEXT NOT NULL,
    description         TEXT NOT NULL DEFAULT '',
    secret              TEXT NOT NULL,
    previous_secret     TEXT,
    previous_expires_at TEXT,
    enabled             INTEGER NOT NULL DEFAULT 1,
    disabled_reason     TEXT,
    failing_since       TEXT,
    inserted_at         TEXT NOT NULL,
    updated_at          TEXT NOT NULL
);

CREATE INDEX webhooks_user_idx ON webhooks (user_id, inserted_at DESC, id DESC);

CREATE TABLE webhook_deliveries (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    webhook_id  TEXT NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,
    event_id    INTEGER,
    msg_id      TEXT NOT NULL,
    type        TEXT NOT NULL,
    payload     TEXT NOT NULL,
    state       TEXT NOT NULL DEFAULT 'pending'
                CHECK (state IN ('pending', 'succeeded', 'failed')),
    attempts    INTEGER NOT NULL DEFAULT 0,
    inserted_at TEXT NOT NULL,
    updated_at  TEXT NOT NULL
);

CREATE INDEX webhook_deliveries_webhook_idx ON webhook_deliveries (webhook_id, id DESC);
CREATE UNIQUE INDEX webhook_deliveries_event_idx ON webhook_deliveries (webhook_id, event_id)
    WHERE event_id IS NOT NULL;
CREATE INDEX webhook_deliveries_inserted_idx ON webhook_deliveries (inserted_at);

CREATE TABLE webhook_attempts (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    delivery_id INTEGER NOT NULL REFERENCES webhook_deliveries (id) ON DELETE CASCADE,
    at          TEXT NOT NULL,
    status      INTEGER,
    latency_ms  INTEGER,
    error       TEXT
);

CREATE INDEX webhook_attempts_delivery_idx ON webhook_attempts (delivery_id, id);

CREATE TABLE webhook_cursor (
    id  INTEGER PRIMARY KEY CHECK (id = 1),
    tx  INTEGER NOT NULL,
    eid INTEGER NOT NULL
);

INSERT INTO webhook_cursor (id, tx, eid) VALUES (1, 0, 0);
