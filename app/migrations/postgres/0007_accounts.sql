-- Accounts beyond OIDC (docs/AUTHENTICATION.md, "Email and password").
--
-- users.email_verified_at: when the account's address was shown to be its
-- owner's (a verification link, a sign-in code, or a provider that says
-- so). A password sign-in needs it; an OIDC login links to an account only
-- when both sides are verified.
ALTER TABLE users ADD COLUMN email_verified_at timestamptz;

-- A user's password: an Argon2id hash in the PHC string form
-- (auth/password.h), at most one per user. The identity row
-- (provider 'password', subject the lowercased email) finds the user.
CREATE TABLE passwords (
    user_id    uuid PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    hash       text NOT NULL,
    updated_at timestamptz NOT NULL
);

-- Single-use secrets sent by mail: a verification link, a reset link, a
-- sign-in code. Only a SHA-256 of the secret is kept, so a copy of the
-- database redeems nothing; it is NULL until the mail job makes the secret
-- (api/accounts.c), so the jobs table never holds one either. tries counts
-- wrong codes (a code dies after five); used_at marks the one use.
CREATE TABLE account_tokens (
    id          uuid PRIMARY KEY,
    purpose     text NOT NULL CHECK (purpose IN ('verify', 'reset', 'code')),
    secret_hash text,
    user_id     uuid REFERENCES users (id) ON DELETE CASCADE,
    email       text NOT NULL,
    tries       integer NOT NULL DEFAULT 0,
    expires_at  timestamptz NOT NULL,
    used_at     timestamptz,
    inserted_at timestamptz NOT NULL
);

CREATE UNIQUE INDEX account_tokens_secret_idx ON account_tokens (purpose, secret_hash);
CREATE INDEX account_tokens_email_idx ON account_tokens (purpose, email, inserted_at DESC);
CREATE INDEX account_tokens_expires_idx ON account_tokens (expires_at);
