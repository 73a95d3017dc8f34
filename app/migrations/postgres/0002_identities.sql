-- A login at a provider (google, apple, any OIDC issuer): (provider,
-- subject) is the provider's stable id for the person and maps to one user.
CREATE TABLE identities (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    provider    text NOT NULL,
    subject     text NOT NULL,
    user_id     uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    inserted_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT identities_provider_subject_key UNIQUE (provider, subject)
);

CREATE INDEX identities_user_id_idx ON identities (user_id);
