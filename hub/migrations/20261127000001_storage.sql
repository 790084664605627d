-- The hub's records on PostgreSQL (hub::storage::postgres). Every `value` column holds the
-- entity encoded by `protocol::codec` (versioned MessagePack envelope); the other columns are
-- the keys and indexes the queries need. Ids (ULIDs) are 16 bytes big-endian, so `bytea` order
-- is id (creation time) order, as in sled.

CREATE TABLE meta (name text PRIMARY KEY, value bytea NOT NULL);

CREATE TABLE baskets (id bytea PRIMARY KEY, value bytea NOT NULL);
CREATE TABLE basket_tokens (token_hash bytea PRIMARY KEY, basket bytea NOT NULL);
CREATE TABLE pending_reminders (customer bytea PRIMARY KEY, value bytea NOT NULL);

CREATE TABLE customers (id bytea PRIMARY KEY, value bytea NOT NULL);
CREATE TABLE customer_emails (email text PRIMARY KEY, customer bytea NOT NULL);
CREATE TABLE customer_aliases (alias bytea PRIMARY KEY, customer bytea NOT NULL);
CREATE TABLE sessions (token_hash bytea PRIMARY KEY, customer bytea NOT NULL, value bytea NOT NULL);
CREATE INDEX sessions_customer ON sessions (customer);
CREATE TABLE erased (customer bytea PRIMARY KEY, pseudonym bytea NOT NULL);

CREATE TABLE categories (id text PRIMARY KEY, value bytea NOT NULL);
CREATE TABLE products (id bytea PRIMARY KEY, value bytea NOT NULL);
CREATE TABLE stock (location text NOT NULL, sku text NOT NULL, value bytea NOT NULL,
                    PRIMARY KEY (location, sku));

CREATE TABLE checkouts (id bytea PRIMARY KEY, open boolean NOT NULL, value bytea NOT NULL);
CREATE INDEX checkouts_open ON checkouts (id) WHERE open;
CREATE TABLE holds (checkout bytea NOT NULL, location text NOT NULL, sku text NOT NULL,
                    value bytea NOT NULL, PRIMARY KEY (checkout, location, sku));
CREATE TABLE orders (id bytea PRIMARY KEY, number text NOT NULL, customer bytea,
                     owes boolean NOT NULL, value bytea NOT NULL);
CREATE INDEX orders_number ON orders (number);
CREATE INDEX orders_customer ON orders (customer, id) WHERE customer IS NOT NULL;
CREATE INDEX orders_owing ON orders (id) WHERE owes;
-- A checkout's order, claimed once: a payment can never make two orders.
CREATE TABLE checkout_orders (checkout bytea PRIMARY KEY, order_id bytea NOT NULL);
CREATE TABLE webhook_events (id text PRIMARY KEY);
CREATE TABLE import_marks (id bytea PRIMARY KEY, value bytea NOT NULL);

CREATE TABLE outbox (destination text NOT NULL, id bytea NOT NULL, value bytea NOT NULL,
                     PRIMARY KEY (destination, id));
CREATE TABLE outbox_dead (destination text NOT NULL, id bytea NOT NULL, value bytea NOT NULL,
                          PRIMARY KEY (destination, id));
-- Messages queued once per key.
CREATE TABLE outbox_keys (key text PRIMARY KEY, id bytea NOT NULL);

CREATE TABLE oauth_codes (hash bytea PRIMARY KEY, value bytea NOT NULL);
CREATE TABLE oauth_spent (hash bytea PRIMARY KEY, grant_id bytea NOT NULL);
CREATE TABLE oauth_tokens (hash bytea PRIMARY KEY, value bytea NOT NULL);
CREATE TABLE oauth_grants (id bytea PRIMARY KEY, customer bytea NOT NULL, active boolean NOT NULL,
                           value bytea NOT NULL);
CREATE INDEX oauth_grants_active ON oauth_grants (customer, id) WHERE active;

-- The event log. `seq` is assigned under the row lock of `event_head` (taken last in the
-- appending transaction), so appends commit in sequence order and no reader ever sees a gap.
CREATE TABLE events (seq bigint PRIMARY KEY, id bytea NOT NULL UNIQUE,
                     -- The timeline index: the customer the event was about (NULL once forgotten).
                     customer bytea, value bytea NOT NULL);
CREATE INDEX events_timeline ON events (customer, id) WHERE customer IS NOT NULL;
CREATE TABLE event_head (one boolean PRIMARY KEY DEFAULT true CHECK (one), last bigint NOT NULL);
INSERT INTO event_head (last) VALUES (0);

-- Shard leases with fencing tokens: `token` grows on every acquisition and never goes back (a
-- released lease keeps its row), so a unit of work carrying an older token is refused.
CREATE TABLE shard_leases (shard bigint PRIMARY KEY, owner text NOT NULL, token bigint NOT NULL,
                           expires_at timestamptz NOT NULL);
