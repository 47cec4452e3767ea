-- trailkeep hot store, schema version 2: event sources.
-- One row per configured source: its resume position and counters.
CREATE TABLE sources (
    name            TEXT PRIMARY KEY,
    stream          TEXT NOT NULL,
    connected       INTEGER NOT NULL,
    last_event_id   TEXT,
    last_event_time TEXT,
    taken           INTEGER NOT NULL,
    duplicates      INTEGER NOT NULL,
    rejected        INTEGER NOT NULL,
    filtered        INTEGER NOT NULL,
    reconnects      INTEGER NOT NULL,
    last_error      TEXT,
    last_error_at   TEXT,
    updated         TEXT NOT NULL
);

-- Events a source received but could not store, kept for the operator.
CREATE TABLE source_rejected (
    id       INTEGER PRIMARY KEY,
    source   TEXT NOT NULL,
    at       TEXT NOT NULL,
    position TEXT NOT NULL,
    reason   TEXT NOT NULL,
    raw      TEXT NOT NULL
);
CREATE INDEX source_rejected_by_source ON source_rejected (source, id);
