-- A login at a provider (see postgres/0002_identities.sql).
CREATE TABLE identities (
    id          TEXT PRIMARY KEY,
    provider    TEXT NOT NULL,
    subject     TEXT NOT NULL,
    user_id     TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    inserted_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    CONSTRAINT identities_provider_subject_key UNIQUE (provider, subject)
);

CREATE INDEX identities_user_id_idx ON identities (user_id);
