-- A second factor: TOTP (docs/AUTHENTICATION.md, "Second factor").
--
-- totp_factors: at most one per user. secret is the base32 secret sealed
-- with AES-256-GCM under a key derived from SECRET_KEY_BASE (api/factors.c),
-- so a copy of the table makes no codes. confirmed_at is NULL while the
-- enrolment waits for its first code; only a confirmed factor is asked for
-- at sign-in. last_step is the last 30 s step accepted: a code is used once.
CREATE TABLE totp_factors (
    user_id      uuid PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    secret       text NOT NULL,
    confirmed_at timestamptz,
    last_step    bigint NOT NULL DEFAULT -1,
    inserted_at  timestamptz NOT NULL
);

-- Ten single-use recovery codes per confirmed factor, as SHA-256 of their
-- normalised form (auth/totp.h); used_at marks the one use.
CREATE TABLE recovery_codes (
    user_id   uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    code_hash text NOT NULL,
    used_at   timestamptz,
    PRIMARY KEY (user_id, code_hash)
);
