-- The change feed's outbox and the audit log (see postgres/0005). SQLite
-- has one writer at a time and AUTOINCREMENT never reuses an id, so ids
-- are in commit order and tx is always 0. Timestamps are RFC 3339 UTC text
-- with microseconds.
CREATE TABLE events (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    tx       INTEGER NOT NULL DEFAULT 0,
    resource TEXT NOT NULL,
    action   TEXT NOT NULL,
    row_id   TEXT NOT NULL,
    owner    TEXT NOT NULL,
    data     TEXT,
    at       TEXT NOT NULL
);

CREATE INDEX events_owner_tx_id_idx ON events (owner, tx, id);
CREATE INDEX events_at_idx ON events (at);

CREATE TABLE audit (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    at         TEXT NOT NULL,
    actor      TEXT,
    action     TEXT NOT NULL,
    target     TEXT,
    ip         TEXT,
    user_agent TEXT,
    request_id TEXT
);

CREATE INDEX audit_actor_id_idx ON audit (actor, id DESC);
CREATE INDEX audit_at_idx ON audit (at);

CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit
BEGIN
    SELECT RAISE(ABORT, 'audit is append-only');
END;

CREATE TRIGGER audit_no_early_delete BEFORE DELETE ON audit
    WHEN old.at > strftime('%Y-%m-%dT%H:%M:%fZ', 'now', '-1 day')
BEGIN
    SELECT RAISE(ABORT, 'audit rows younger than a day cannot be deleted');
END;
