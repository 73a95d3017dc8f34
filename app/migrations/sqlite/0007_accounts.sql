-- Accounts beyond OIDC (see postgres/0007_accounts.sql).
ALTER TABLE users ADD COLUMN email_verified_at TEXT;

CREATE TABLE passwords (
    user_id    TEXT PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    hash       TEXT NOT NULL,
    updated_at TEXT NOT NULL
);

CREATE TABLE account_tokens (
    id          TEXT PRIMARY KEY,
    purpose     TEXT NOT NULL CHECK (purpose IN ('verify', 'reset', 'code')),
    secret_hash TEXT,
    user_id     TEXT REFERENCES users (id) ON DELETE CASCADE,
    email       TEXT NOT NULL,
    tries       INTEGER NOT NULL DEFAULT 0,
    expires_at  TEXT NOT NULL,
    used_at     TEXT,
    inserted_at TEXT NOT NULL
);

CREATE UNIQUE INDEX account_tokens_secret_idx ON account_tokens (purpose, secret_hash);
CREATE INDEX account_tokens_email_idx ON account_tokens (purpose, email, inserted_at DESC);
CREATE INDEX account_tokens_expires_idx ON account_tokens (expires_at);
