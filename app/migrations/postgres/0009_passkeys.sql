-- Passkeys (docs/AUTHENTICATION.md, "Passkeys"): WebAuthn credentials.
-- credential_id is the authenticator's id (base64url), unique across
-- users; public_key the SubjectPublicKeyInfo (DER, base64url) made from
-- its COSE key at registration (auth/webauthn.h), alg its COSE algorithm;
-- sign_count the last signature counter seen (a counter that goes back is
-- refused: a cloned authenticator).
CREATE TABLE passkeys (
    id              uuid PRIMARY KEY,
    user_id         uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    credential_id   text NOT NULL UNIQUE,
    public_key      text NOT NULL,
    alg             integer NOT NULL,
    sign_count      bigint NOT NULL DEFAULT 0,
    aaguid          text NOT NULL,
    backup_eligible boolean NOT NULL DEFAULT false,
    backed_up       boolean NOT NULL DEFAULT false,
    name            text NOT NULL DEFAULT '',
    inserted_at     timestamptz NOT NULL,
    last_used_at    timestamptz
);

CREATE INDEX passkeys_user_idx ON passkeys (user_id, inserted_at DESC);
