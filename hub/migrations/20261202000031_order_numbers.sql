-- Online order numbers are minted by the engine (hub/src/storage/postgres.rs,
-- `next_order_sequence`), so two hub nodes never hand out the same one, and a number is unique.
CREATE TABLE order_sequences (prefix text PRIMARY KEY, last bigint NOT NULL);
INSERT INTO order_sequences (prefix, last)
SELECT 'W', COALESCE(max(substring(number FROM 3)::bigint), 0)
FROM orders WHERE number ~ '^W-[0-9]+$';
DROP INDEX orders_number;
ALTER TABLE orders ADD CONSTRAINT orders_number_unique UNIQUE (number);
