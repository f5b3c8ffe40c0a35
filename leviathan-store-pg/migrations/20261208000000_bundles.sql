-- The control plane's bundle ids, each bound to the content first ingested under it, so that the
-- same id with other content is refused. Keys and values are SHA-256 digests: of the bundle id,
-- and of the bundle's target and canonical events.
CREATE TABLE bundles (
    bundle  bytea       PRIMARY KEY CHECK (octet_length(bundle) = 32),
    content bytea       NOT NULL CHECK (octet_length(content) = 32),
    bound_at timestamptz NOT NULL DEFAULT now()
);
