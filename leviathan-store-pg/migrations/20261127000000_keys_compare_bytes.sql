-- Ids and stream names are opaque keys: compare them byte for byte (the "C" collation) rather
-- than by the server's locale, which costs a locale-aware comparison at every step of every
-- index insert and lookup, and equality is byte equality either way. The indexes on these
-- columns are rebuilt once.
ALTER TABLE events ALTER COLUMN event_id TYPE text COLLATE "C";
ALTER TABLE events ALTER COLUMN stream TYPE text COLLATE "C";
ALTER TABLE streams ALTER COLUMN stream TYPE text COLLATE "C";
ALTER TABLE graph_nodes ALTER COLUMN node_id TYPE text COLLATE "C";
ALTER TABLE graph_edges ALTER COLUMN edge_id TYPE text COLLATE "C";
ALTER TABLE graph_streams ALTER COLUMN stream TYPE text COLLATE "C";

-- An event without a stream has no stream version to keep unique: index only the others.
ALTER TABLE events DROP CONSTRAINT events_stream_stream_version_key;
CREATE UNIQUE INDEX events_stream_version_key ON events (stream, stream_version)
    WHERE stream IS NOT NULL;
