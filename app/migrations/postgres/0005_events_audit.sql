-- The change feed's outbox and the audit log (docs/REALTIME.md).
--
-- events: one row per change of a declared resource, written by the same
-- statement as the change (api/engine.c), so a committed write always has
-- its event and a rolled-back one never does. tx is the writing
-- transaction's id (pg_current_xact_id() as bigint): the feed is read in
-- (tx, id) order and an event is handed out only once every transaction
-- older than the oldest one still running has ended (events/feed.c), so an
-- event that commits late can never fall behind a reader's position.
CREATE TABLE events (
    id       bigserial PRIMARY KEY,
    tx       bigint NOT NULL,
    resource text NOT NULL,
    action   text NOT NULL,
    row_id   uuid NOT NULL,
    owner    uuid NOT NULL,
    data     text,
    at       timestamptz NOT NULL DEFAULT now()
);

-- The feed (every owner) and one owner's catch-up, both in feed order.
CREATE INDEX events_tx_id_idx ON events (tx, id);
CREATE INDEX events_owner_tx_id_idx ON events (owner, tx, id);
-- Pruning by age: rows arrive in time order, so a BRIN index finds the old
-- ones for almost no cost on insert.
CREATE INDEX events_at_brin ON events USING brin (at);

-- Who did what. Append-only from the application's side: nothing updates
-- a row, and only rows older than a day (the shortest retention) can be
-- deleted, by the pruning.
CREATE TABLE audit (
    id         bigserial PRIMARY KEY,
    at         timestamptz NOT NULL DEFAULT now(),
    actor      uuid,
    action     text NOT NULL,
    target     text,
    ip         text,
    user_agent text,
    request_id text
);

CREATE INDEX audit_actor_id_idx ON audit (actor, id DESC);
CREATE INDEX audit_at_brin ON audit USING brin (at);

CREATE FUNCTION audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' THEN
        RAISE EXCEPTION 'audit is append-only';
    END IF;
    IF OLD.at > now() - interval '1 day' THEN
        RAISE EXCEPTION 'audit rows younger than a day cannot be deleted';
    END IF;
    RETURN OLD;
END;
$$;

CREATE TRIGGER audit_append_only BEFORE UPDATE OR DELETE ON audit
    FOR EACH ROW EXECUTE FUNCTION audit_append_only();
