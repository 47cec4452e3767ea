-- trailkeep hot store, schema version 4 (PostgreSQL): destinations' dead letters.
-- A batch a destination refused permanently (a 4xx other than 408/429):
-- its seq range, the response, and when; the cursor moved past it, and an
-- operator can retry it (then `resolved` is set).
CREATE TABLE dead_letters (
    id          BIGSERIAL PRIMARY KEY,
    destination TEXT NOT NULL,
    stream      TEXT NOT NULL,
    start_seq   BIGINT NOT NULL,
    end_seq     BIGINT NOT NULL,
    status      INTEGER,
    error       TEXT NOT NULL,
    at          TEXT NOT NULL,
    resolved    TEXT
);
CREATE INDEX dead_letters_by_destination ON dead_letters (destination, id);
