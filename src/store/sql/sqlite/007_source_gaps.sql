-- trailkeep hot store, schema version 7: possible upstream gaps of sources.
-- Each node's receiving from each source (heartbeat while receiving), so
-- any node can tell whether some node was receiving.
CREATE TABLE source_receivers (
    source    TEXT NOT NULL,
    node      TEXT NOT NULL,
    receiving INTEGER NOT NULL,
    since_ms  INTEGER NOT NULL,
    until_ms  INTEGER NOT NULL,
    ended     TEXT NOT NULL,
    -- the earliest start of the window before since_ms, until settled
    pending_ms INTEGER,
    PRIMARY KEY (source, node)
);

-- Windows in which no connection on any node was receiving; merged when
-- close together; logged_* say what of a record is in `_trailkeep`.
CREATE TABLE source_gaps (
    id            INTEGER PRIMARY KEY,
    source        TEXT NOT NULL,
    start_ms      INTEGER NOT NULL,
    end_ms        INTEGER NOT NULL,
    start_at      TEXT NOT NULL,
    end_at        TEXT NOT NULL,
    reason        TEXT NOT NULL,
    resume        TEXT NOT NULL,
    merged        INTEGER NOT NULL,
    logged_end_ms INTEGER,
    logged_at_ms  INTEGER
);
CREATE INDEX source_gaps_by_source ON source_gaps (source, end_ms);
