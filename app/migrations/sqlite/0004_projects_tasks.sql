-- A user's projects and their tasks (see postgres/0004_projects_tasks.sql).
-- archived is 0/1; timestamps are RFC 3339 UTC text with microseconds. The
-- driver turns foreign keys on, so ON DELETE CASCADE removes a project's
-- tasks here too.
CREATE TABLE projects (
    id          TEXT PRIMARY KEY,
    user_id     TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name        TEXT NOT NULL,
    description TEXT,
    archived    INTEGER NOT NULL DEFAULT 0,
    inserted_at TEXT NOT NULL,
    updated_at  TEXT NOT NULL
);

CREATE INDEX projects_user_inserted_idx
    ON projects (user_id, inserted_at DESC, id DESC);

-- due_date is 'YYYY-MM-DD' text. The CHECK refuses what PostgreSQL's date
-- type would: date() with a modifier carries an impossible day over into
-- the next month (2026-02-30 becomes 2026-03-02), and gives NULL for
-- anything that is not a date at all.
CREATE TABLE tasks (
    id          TEXT PRIMARY KEY,
    user_id     TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    project_id  TEXT NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    title       TEXT NOT NULL,
    details     TEXT,
    status      TEXT NOT NULL DEFAULT 'todo'
                CHECK (status IN ('todo', 'in_progress', 'done')),
    due_date    TEXT CHECK (due_date IS NULL OR date(due_date, '+0 days') IS due_date),
    inserted_at TEXT NOT NULL,
    updated_at  TEXT NOT NULL
);

CREATE INDEX tasks_user_project_status_idx ON tasks (user_id, project_id, status);
CREATE INDEX tasks_project_inserted_idx ON tasks (project_id, inserted_at, id);
