-- The log's Merkle tree (RFC 9162), kept as full tiles: the 16 hashes of tree level 4·level at
-- indexes 16·idx .. 16·idx+15, concatenated. The event writer inserts the tiles a group fills in
-- the same statement as the group's events; everything else is computed from them and, for the
-- right edge, from the last events' hashes (see leviathan_core::tlog).
CREATE TABLE log_tiles (
    level  smallint NOT NULL CHECK (level >= 0 AND level < 16),
    idx    bigint   NOT NULL CHECK (idx >= 0),
    hashes bytea    NOT NULL CHECK (octet_length(hashes) = 512),
    PRIMARY KEY (level, idx)
);

-- Checkpoints signed by the control plane (C2SP signed notes, with any witness cosignatures),
-- by tree size. They live beside the log, not in it: an event recording a checkpoint would grow
-- the tree the checkpoint was signed over.
CREATE TABLE log_checkpoints (
    size        bigint      PRIMARY KEY CHECK (size >= 0),
    note        text        NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now()
);

-- Whether the tiles cover the whole log. A log that already held events when this migration ran
-- has its tree built (from the stored hashes, under the writer lock) by the next connect.
CREATE TABLE log_tree (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    built     boolean NOT NULL
);
INSERT INTO log_tree (built) SELECT NOT EXISTS (SELECT 1 FROM events);
