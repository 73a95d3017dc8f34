-- People who use the service (see postgres/0001_users.sql). SQLite keeps
-- UUIDs as lower-case text and timestamps as RFC 3339 UTC text.
CREATE TABLE users (
    id          TEXT PRIMARY KEY,
    email       TEXT,
    name        TEXT,
    first_name  TEXT,
    last_name   TEXT,
    image       TEXT,
    inserted_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    updated_at  TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);

CREATE INDEX users_email_idx ON users (lower(email));
