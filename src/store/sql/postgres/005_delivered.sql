-- trailkeep hot store, schema version 5 (PostgreSQL): events each
-- destination has delivered, per stream, kept across restarts
-- (`/v1/destinations` `delivered`, `trailkeep_destination_delivered_total`).
-- Deliveries before this version are not counted.
ALTER TABLE delivery_cursors ADD COLUMN delivered BIGINT NOT NULL DEFAULT 0;
