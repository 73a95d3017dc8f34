-- Passkeys (see postgres/0009_passkeys.sql).
CREATE TABLE passkeys (
    id              TEXT PRIMARY KEY,
    user_id         TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    credential_id   TEXT NOT NULL UNIQUE,
    public_key      TEXT NOT NULL,
    alg             INTEGER NOT NULL,
    sign_count      INTEGER NOT NULL DEFAULT 0,
    aaguid          TEXT NOT NULL,
    backup_eligible INTEGER NOT NULL DEFAULT 0,
    backed_up       INTEGER NOT NULL DEFAULT 0,
    name            TEXT NOT NULL DEFAULT '',
    inserted_at     TEXT NOT NULL,
    last_used_at    TEXT
);

CREATE INDEX passkeys_user_idx ON passkeys (user_id, inserted_at DESC);
