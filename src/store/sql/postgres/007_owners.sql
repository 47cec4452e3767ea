-- Streams owned by nodes and the one-round-trip append (issue #19).
--
-- Streams hash into shards (cluster_settings.shards); each shard is a lease
-- named `shard:NNNN` whose token is the owner's epoch. The owner appends with
-- one call of trailkeep_append, which compares every head (seq, hash) and
-- the epoch before writing anything: a stale owner, or any other writer, can
-- only be refused, never fork a chain or leave a gap.

-- The epoch of the owner that last appended to the stream (0: none yet, or
-- only non-owners). An owner with an older epoch is refused.
ALTER TABLE streams ADD COLUMN epoch BIGINT NOT NULL DEFAULT 0;

-- Nodes that share this store: heartbeat and the URL others forward to.
CREATE TABLE nodes (
    node    TEXT PRIMARY KEY,
    url     TEXT,
    seen_ms BIGINT NOT NULL
);

-- Fixed when the schema is created: every node must map streams alike.
CREATE TABLE cluster_settings (
    shards INTEGER NOT NULL CHECK (shards > 0)
);
INSERT INTO cluster_settings (shards) VALUES (64);

-- One append call. s_*: one entry per stream (expected head, new head, the
-- caller's shard lease and epoch or NULL when it does not own the shard);
-- e_*: the new events; t_*: the tile strips they change. Returns nothing
-- when everything was written, else the rows that refused it (nothing
-- written): 'fenced' (lease or epoch no longer the caller's), 'head' (the
-- stored head, which differs from the expected one), 'dup' (an id already
-- stored, with its seq and hash).
CREATE FUNCTION trailkeep_append(
    p_holder TEXT,
    s_id BIGINT[], s_seq BIGINT[], s_hash TEXT[], s_new_seq BIGINT[], s_new_hash TEXT[],
    s_lease TEXT[], s_epoch BIGINT[],
    e_stream BIGINT[], e_seq BIGINT[], e_id TEXT[], e_type TEXT[], e_time TEXT[],
    e_received TEXT[], e_hash TEXT[], e_body TEXT[],
    t_stream BIGINT[], t_level INTEGER[], t_idx BIGINT[], t_strip BIGINT[], t_data BYTEA[])
RETURNS TABLE (r_kind TEXT, r_stream BIGINT, r_id TEXT, r_seq BIGINT, r_hash TEXT)
LANGUAGE plpgsql AS $$
DECLARE
    n BIGINT;
    k INT := cardinality(s_id);
    m INT := cardinality(e_stream);
    t INT := cardinality(t_stream);
BEGIN
    -- The arrays must line up (unnest pads a short one with NULLs, which
    -- would slip past the comparisons below).
    IF cardinality(s_seq) <> k OR cardinality(s_hash) <> k OR cardinality(s_new_seq) <> k
       OR cardinality(s_new_hash) <> k OR cardinality(s_lease) <> k OR cardinality(s_epoch) <> k
       OR cardinality(e_seq) <> m OR cardinality(e_id) <> m OR cardinality(e_type) <> m
       OR cardinality(e_time) <> m OR cardinality(e_received) <> m OR cardinality(e_hash) <> m
       OR cardinality(e_body) <> m OR cardinality(t_level) <> t OR cardinality(t_idx) <> t
       OR cardinality(t_strip) <> t OR cardinality(t_data) <> t THEN
        RAISE EXCEPTION 'trailkeep_append: argument arrays of different lengths';
    END IF;
    -- Each stream's new events are exactly seqs head+1 .. new head.
    IF EXISTS (
        SELECT 1 FROM unnest(s_id, s_seq, s_new_seq) AS x(sid, seq, nseq)
        FULL JOIN (SELECT e.sid, count(*) AS c, min(e.seq) AS lo, max(e.seq) AS hi
                   FROM unnest(e_stream, e_seq) AS e(sid, seq) GROUP BY e.sid) g ON g.sid = x.sid
        WHERE x.sid IS NULL OR g.sid IS NULL OR g.c <> x.nseq - x.seq
           OR g.lo <> x.seq + 1 OR g.hi <> x.nseq) THEN
        RAISE EXCEPTION 'trailkeep_append: events do not fill each stream from its head to its new head';
    END IF;
    RETURN QUERY SELECT 'fenced'::text, f.sid, f.lease, f.epoch, NULL::text
        FROM unnest(s_id, s_lease, s_epoch) AS f(sid, lease, epoch)
        WHERE f.lease IS NOT NULL AND NOT EXISTS (
            SELECT 1 FROM leases l
            WHERE l.name = f.lease AND l.holder = p_holder AND l.token = f.epoch);
    IF FOUND THEN RETURN; END IF;
    -- Heads locked in id order: two callers never wait on each other in a cycle.
    PERFORM 1 FROM streams s WHERE s.id = ANY(s_id) ORDER BY s.id FOR NO KEY UPDATE;
    GET DIAGNOSTICS n = ROW_COUNT;
    IF n <> k THEN
        RAISE EXCEPTION 'trailkeep_append: % of % streams exist', n, k;
    END IF;
    RETURN QUERY SELECT 'fenced'::text, s.id, NULL::text, s.epoch, NULL::text
        FROM streams s JOIN unnest(s_id, s_epoch) AS x(sid, epoch) ON s.id = x.sid
        WHERE x.epoch IS NOT NULL AND s.epoch > x.epoch;
    IF FOUND THEN RETURN; END IF;
    RETURN QUERY SELECT 'head'::text, s.id, NULL::text, s.head_seq, s.head_hash
        FROM streams s JOIN unnest(s_id, s_seq, s_hash) AS x(sid, seq, hash) ON s.id = x.sid
        WHERE s.head_seq IS DISTINCT FROM x.seq OR s.head_hash IS DISTINCT FROM x.hash;
    IF FOUND THEN RETURN; END IF;
    RETURN QUERY SELECT 'dup'::text, e.stream_id, e.id, e.seq, e.hash
        FROM events e JOIN unnest(e_stream, e_id) AS x(sid, id)
        ON e.stream_id = x.sid AND e.id = x.id;
    IF FOUND THEN RETURN; END IF;
    INSERT INTO events (stream_id, seq, id, type, time, received, hash, body)
        SELECT * FROM unnest(e_stream, e_seq, e_id, e_type, e_time, e_received, e_hash, e_body);
    INSERT INTO tiles (stream_id, level, idx, strip, data)
        SELECT * FROM unnest(t_stream, t_level, t_idx, t_strip, t_data)
        ON CONFLICT (stream_id, level, idx, strip) DO UPDATE SET data = excluded.data;
    UPDATE streams s SET head_seq = x.seq, head_hash = x.hash, epoch = COALESCE(x.epoch, s.epoch)
        FROM unnest(s_id, s_new_seq, s_new_hash, s_epoch) AS x(sid, seq, hash, epoch)
        WHERE s.id = x.sid;
END
$$;
