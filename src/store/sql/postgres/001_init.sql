-- trailkeep hot store on PostgreSQL, schema version 1 (table schema_version).
-- The same tables as the SQLite store; see sql/sqlite/*.sql for comments.
CREATE TABLE streams (
    id        BIGSERIAL PRIMARY KEY,
    name      TEXT NOT NULL UNIQUE,
    head_seq  BIGINT NOT NULL,
    head_hash TEXT NOT NULL,
    created   TEXT NOT NULL
);

CREATE TABLE events (
    stream_id BIGINT NOT NULL REFERENCES streams(id),
    seq       BIGINT NOT NULL,
    id        TEXT NOT NULL,
    type      TEXT NOT NULL,
    time      TEXT NOT NULL,
    received  TEXT NOT NULL,
    hash      TEXT NOT NULL,
    body      TEXT NOT NULL,
    PRIMARY KEY (stream_id, seq)
);
CREATE UNIQUE INDEX events_by_id ON events (stream_id, id);

CREATE TABLE tiles (
    stream_id BIGINT NOT NULL REFERENCES streams(id),
    level     INTEGER NOT NULL,
    idx       BIGINT NOT NULL,
    strip     BIGINT NOT NULL,
    data      BYTEA NOT NULL,
    PRIMARY KEY (stream_id, level, idx, strip)
);

CREATE TABLE checkpoints (
    stream_id BIGINT NOT NULL REFERENCES streams(id),
    size      BIGINT NOT NULL,
    root      TEXT NOT NULL,
    note      TEXT NOT NULL,
    created   TEXT NOT NULL,
    PRIMARY KEY (stream_id, size)
);

CREATE TABLE api_keys (
    id          TEXT PRIMARY KEY,
    scope       TEXT NOT NULL,
    stream      TEXT NOT NULL,
    secret_hash BYTEA NOT NULL,
    created     TEXT NOT NULL,
    revoked     TEXT
);

CREATE TABLE sources (
    name            TEXT PRIMARY KEY,
    stream          TEXT NOT NULL,
    connected       BOOLEAN NOT NULL,
    last_event_id   TEXT,
    last_event_time TEXT,
    taken           BIGINT NOT NULL,
    duplicates      BIGINT NOT NULL,
    rejected        BIGINT NOT NULL,
    filtered        BIGINT NOT NULL,
    reconnects      BIGINT NOT NULL,
    last_error      TEXT,
    last_error_at   TEXT,
    updated         TEXT NOT NULL
);

CREATE TABLE source_rejected (
    id       BIGSERIAL PRIMARY KEY,
    source   TEXT NOT NULL,
    at       TEXT NOT NULL,
    position TEXT NOT NULL,
    reason   TEXT NOT NULL,
    raw      TEXT NOT NULL
);
CREATE INDEX source_rejected_by_source ON source_rejected (source, id);
