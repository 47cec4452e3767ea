-- trailkeep hot store, schema version 1 (PRAGMA user_version).
CREATE TABLE streams (
    id        INTEGER PRIMARY KEY,
    name      TEXT NOT NULL UNIQUE,
    head_seq  INTEGER NOT NULL,
    head_hash TEXT NOT NULL,
    created   TEXT NOT NULL
);

-- One row per stored event. `body` is the canonical (RFC 8785) JSON without
-- `hash`; `hash` is the lowercase hex SHA-256 of `body`.
CREATE TABLE events (
    stream_id INTEGER NOT NULL REFERENCES streams(id),
    seq       INTEGER NOT NULL,
    id        TEXT NOT NULL,
    type      TEXT NOT NULL,
    time      TEXT NOT NULL,
    received  TEXT NOT NULL,
    hash      TEXT NOT NULL,
    body      TEXT NOT NULL,
    PRIMARY KEY (stream_id, seq)
) WITHOUT ROWID;
CREATE UNIQUE INDEX events_by_id ON events (stream_id, id);

-- Merkle tree tiles (C2SP tlog-tiles geometry), stored in strips of up to
-- 16 hashes (512 bytes): a commit rewrites only the strips it extends, not
-- the whole 8 KiB tile. A tile is its strips concatenated in order.
CREATE TABLE tiles (
    stream_id INTEGER NOT NULL REFERENCES streams(id),
    level     INTEGER NOT NULL,
    idx       INTEGER NOT NULL,
    strip     INTEGER NOT NULL,
    data      BLOB NOT NULL,
    PRIMARY KEY (stream_id, level, idx, strip)
) WITHOUT ROWID;

-- Signed tree heads (C2SP signed notes).
CREATE TABLE checkpoints (
    stream_id INTEGER NOT NULL REFERENCES streams(id),
    size      INTEGER NOT NULL,
    root      TEXT NOT NULL,
    note      TEXT NOT NULL,
    created   TEXT NOT NULL,
    PRIMARY KEY (stream_id, size)
) WITHOUT ROWID;

-- API keys: only the SHA-256 of the secret part is stored.
CREATE TABLE api_keys (
    id          TEXT PRIMARY KEY,
    scope       TEXT NOT NULL,
    stream      TEXT NOT NULL,
    secret_hash BLOB NOT NULL,
    created     TEXT NOT NULL,
    revoked     TEXT
);
