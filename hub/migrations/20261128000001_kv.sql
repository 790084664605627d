-- The modules' ordered key-value trees on PostgreSQL (hub::storage::kv): one row per key of a
-- named tree. Keys are compared as bytes (`bytea` order is sled's order); values are opaque
-- (the modules encode them with `protocol::codec`).
CREATE TABLE kv (
    tree text NOT NULL,
    key bytea NOT NULL,
    value bytea NOT NULL,
    PRIMARY KEY (tree, key)
);
