-- A user's notes (API.md). Lists are per user, per archived flag, newest
-- first: the index serves that WHERE and ORDER BY in one range scan
-- (EXPLAIN is checked by app/tests/http/test_notes.py).
CREATE TABLE notes (
    id          uuid PRIMARY KEY,
    user_id     uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    title       text NOT NULL,
    content     text NOT NULL DEFAULT '',
    archived    boolean NOT NULL DEFAULT false,
    inserted_at timestamptz NOT NULL,
    updated_at  timestamptz NOT NULL
);

CREATE INDEX notes_user_archived_inserted_idx
    ON notes (user_id, archived, inserted_at DESC, id DESC);
