-- Leviathan's schema: the hash-chained event log, the persisted projection and artifacts.
-- Applied by `PgStore::connect` through sqlx's migrator, which holds an advisory lock while it
-- runs, so any number of processes may start at once.

-- The event log. `canonical` holds the exact bytes that were hashed; every read and every
-- verification decodes them. `payload` (jsonb) and the other columns exist for queries only:
-- jsonb reorders keys and normalises numbers, so it is never used to rebuild a hash input.
CREATE TABLE events (
    seq            bigint      PRIMARY KEY CHECK (seq > 0),
    event_id       text        NOT NULL UNIQUE,
    event_type     text        NOT NULL,
    actor_id       text,
    "timestamp"    timestamptz NOT NULL,
    payload        jsonb       NOT NULL,
    prev_hash      bytea       CHECK (octet_length(prev_hash) = 32),
    hash           bytea       NOT NULL UNIQUE CHECK (octet_length(hash) = 32),
    canonical      bytea       NOT NULL,
    stream         text,
    stream_version bigint      CHECK (stream_version > 0),
    CHECK ((seq = 1) = (prev_hash IS NULL)),
    CHECK ((stream IS NULL) = (stream_version IS NULL)),
    UNIQUE (stream, stream_version)
);

-- The log is append-only: UPDATE, DELETE and TRUNCATE are refused whoever asks.
CREATE FUNCTION leviathan_events_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_LEVEL = 'ROW' THEN
        RAISE EXCEPTION 'events is append-only: % of the event at seq % refused', TG_OP, OLD.seq
            USING ERRCODE = 'restrict_violation',
                  HINT = 'events are never changed or removed; append a correcting event instead';
    END IF;
    RAISE EXCEPTION 'events is append-only: % refused', TG_OP
        USING ERRCODE = 'restrict_violation',
              HINT = 'events are never changed or removed; append a correcting event instead';
END
$$;

CREATE TRIGGER events_refuse_update_delete
    BEFORE UPDATE OR DELETE ON events
    FOR EACH ROW EXECUTE FUNCTION leviathan_events_append_only();

CREATE TRIGGER events_refuse_truncate
    BEFORE TRUNCATE ON events
    FOR EACH STATEMENT EXECUTE FUNCTION leviathan_events_append_only();

-- Stream versions (number of events per stream), maintained by the writer.
CREATE TABLE streams (
    stream  text   PRIMARY KEY,
    version bigint NOT NULL CHECK (version > 0)
);

-- The log's tail: one row, read and moved only by the writer under its advisory lock.
CREATE TABLE log_head (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    seq       bigint  NOT NULL CHECK (seq >= 0),
    hash      bytea   CHECK (octet_length(hash) = 32),
    CHECK ((seq = 0) = (hash IS NULL))
);
INSERT INTO log_head (seq, hash) VALUES (0, NULL);

-- The persisted projection. Bodies are the serde JSON of core's graph types.
CREATE TABLE graph_nodes (
    node_id text  PRIMARY KEY,
    kind    text  NOT NULL,
    body    jsonb NOT NULL
);

CREATE TABLE graph_edges (
    edge_id   text  PRIMARY KEY,
    edge_type text  NOT NULL,
    from_node text  NOT NULL,
    to_node   text  NOT NULL,
    body      jsonb NOT NULL
);

CREATE TABLE graph_streams (
    stream  text   PRIMARY KEY,
    version bigint NOT NULL CHECK (version >= 0)
);

-- Anomalies, keyed by the seq of the event the projection could not apply.
CREATE TABLE graph_anomalies (
    seq  bigint PRIMARY KEY CHECK (seq > 0),
    body jsonb  NOT NULL
);

-- The last event folded into the stored projection (seq 0: nothing folded).
CREATE TABLE graph_checkpoint (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    seq       bigint  NOT NULL CHECK (seq >= 0),
    hash      bytea   CHECK (octet_length(hash) = 32),
    CHECK ((seq = 0) = (hash IS NULL))
);
INSERT INTO graph_checkpoint (seq, hash) VALUES (0, NULL);

-- Content-addressed blobs, checked against their address on every read.
CREATE TABLE artifacts (
    sha256    bytea       PRIMARY KEY CHECK (octet_length(sha256) = 32),
    content   bytea       NOT NULL,
    size      bigint      NOT NULL CHECK (size >= 0),
    stored_at timestamptz NOT NULL DEFAULT now()
);
