-- trailkeep hot store, schema version 6 (SQLite): events each destination
-- has delivered, per stream, kept across restarts (`/v1/destinations`
-- `delivered`, `trailkeep_destination_delivered_total`). Deliveries before
-- this version are not counted.
ALTER TABLE delivery_cursors ADD COLUMN delivered INTEGER NOT NULL DEFAULT 0;
