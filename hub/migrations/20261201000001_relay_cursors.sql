-- Positions of the relays that publish from PostgreSQL to NATS JetStream (one row per relay,
-- e.g. `events`): the last log sequence the stream acknowledged. Advanced only by the holder of
-- the relay's lease (fenced like a unit of work), never moved back.
CREATE TABLE relay_cursors (name text PRIMARY KEY, seq bigint NOT NULL);
