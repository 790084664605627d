-- Hub nodes of a cluster (hub/src/cluster/membership.rs): each node heartbeats its row with
-- the database's clock; a node is live while its heartbeat is younger than the lease ttl.
CREATE TABLE cluster_nodes (
    node_id      text PRIMARY KEY,
    address      text NOT NULL,
    heartbeat_at timestamptz NOT NULL
);
