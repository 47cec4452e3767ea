-- Leases (one holder per job); see sql/sqlite/003_leases.sql.
CREATE TABLE leases (
    name       TEXT PRIMARY KEY,
    holder     TEXT NOT NULL,
    token      BIGINT NOT NULL,
    expires_ms BIGINT NOT NULL
);
