-- trailkeep hot store, schema version 3 (PostgreSQL): the cold archive.
-- One row per archived batch, recorded only after its object and manifest
-- were written create-only and read back (size and SHA-256). Events with
-- seq <= the stream's highest end_seq may then leave `events`.
CREATE TABLE archive_batches (
    stream_id       BIGINT NOT NULL REFERENCES streams(id),
    start_seq       BIGINT NOT NULL,
    end_seq         BIGINT NOT NULL,
    count           BIGINT NOT NULL,
    first_time      TEXT NOT NULL,
    last_time       TEXT NOT NULL,
    last_hash       TEXT NOT NULL,
    object_key      TEXT NOT NULL,
    object_sha256   TEXT NOT NULL,
    object_size     BIGINT NOT NULL,
    raw_size        BIGINT NOT NULL,
    manifest_key    TEXT NOT NULL,
    manifest_sha256 TEXT NOT NULL,
    created         TEXT NOT NULL,
    PRIMARY KEY (stream_id, start_seq)
);

-- Events brought back from the archive keep their seq and hash; `restored`
-- is when. They are never archived again.
ALTER TABLE events ADD COLUMN restored TEXT;

-- How far each destination has delivered each stream. Hot deletion stops
-- at the lowest cursor of a stream unless `archive_past` allows passing it.
CREATE TABLE delivery_cursors (
    destination  TEXT NOT NULL,
    stream       TEXT NOT NULL,
    seq          BIGINT NOT NULL,
    archive_past BOOLEAN NOT NULL,
    updated      TEXT NOT NULL,
    PRIMARY KEY (destination, stream)
);
