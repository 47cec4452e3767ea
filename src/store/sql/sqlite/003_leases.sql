-- trailkeep hot store, schema version 3: leases (one holder per job).
-- `token` grows whenever the holder changes: writes done under a lease
-- check it in their own transaction (fencing).
CREATE TABLE leases (
    name       TEXT PRIMARY KEY,
    holder     TEXT NOT NULL,
    token      INTEGER NOT NULL,
    expires_ms INTEGER NOT NULL
);
