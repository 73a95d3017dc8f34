-- A user's projects and their tasks (API.md). Project lists are per user,
-- newest first; a project's own page lists its tasks in creation order;
-- task lists filter by project and status. Deleting a project deletes its
-- tasks here, in the database, so no handler can leave orphans behind.
CREATE TABLE projects (
    id          uuid PRIMARY KEY,
    user_id     uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name        text NOT NULL,
    description text,
    archived    boolean NOT NULL DEFAULT false,
    inserted_at timestamptz NOT NULL,
    updated_at  timestamptz NOT NULL
);

CREATE INDEX projects_user_inserted_idx
    ON projects (user_id, inserted_at DESC, id DESC);

-- user_id is the task's own owner column, so that every task query is
-- scoped like every other resource's (WHERE user_id = $n) without a join;
-- the handlers only ever put a task in a project of the same user.
-- due_date is a date: text 'YYYY-MM-DD' out under the default DateStyle
-- (ISO), which is what API.md's task shape shows.
CREATE TABLE tasks (
    id          uuid PRIMARY KEY,
    user_id     uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    project_id  uuid NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    title       text NOT NULL,
    details     text,
    status      text NOT NULL DEFAULT 'todo'
                CHECK (status IN ('todo', 'in_progress', 'done')),
    due_date    date,
    inserted_at timestamptz NOT NULL,
    updated_at  timestamptz NOT NULL
);

-- GET /tasks: the user's tasks, optionally of one project, optionally of
-- one status.
CREATE INDEX tasks_user_project_status_idx ON tasks (user_id, project_id, status);
-- A project's tasks in order (GET /projects/:id), and the cascade's lookup
-- when a project goes.
CREATE INDEX tasks_project_inserted_idx ON tasks (project_id, inserted_at, id);
