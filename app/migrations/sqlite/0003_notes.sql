-- A user's notes (see postgres/0003_notes.sql). archived is 0/1;
-- timestamps are RFC 3339 UTC text with microseconds, which sorts in time
-- order.
CREATE TABLE notes (
    id          TEXT PRIMARY KEY,
    user_id     TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    title       TEXT NOT NULL,
    content     TEXT NOT NULL DEFAULT '',
    archived    INTEGER NOT NULL DEFAULT 0,
    inserted_at TEXT NOT NULL,
    updated_at  TEXT NOT NULL
);

CREATE INDEX notes_user_archived_inserted_idx
    ON notes (user_id, archived, inserted_at DESC, id DESC);
