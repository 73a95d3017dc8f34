-- People who use the service. One row per person, whatever the number of
-- providers they log in with (identities); everything else references
-- users.id, never a provider's user id.
CREATE TABLE users (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    email       text,
    name        text,
    first_name  text,
    last_name   text,
    image       text,
    inserted_at timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX users_email_idx ON users (lower(email));
