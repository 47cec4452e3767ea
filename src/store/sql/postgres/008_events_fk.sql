-- Events and tiles without per-row foreign-key checks (issue #19).
--
-- PostgreSQL checks a foreign key with a trigger per inserted row (a lookup
-- and a KEY SHARE lock on the stream row): about 30% of an event insert,
-- measured. Every write to these tables names a stream that exists and
-- cannot go away: trailkeep_append counts and locks each stream row before
-- inserting under it (and raises when one is missing), restores and copies
-- write under streams they read or created, and no stream row is ever
-- deleted. verify reads events per stream, from the streams table.
ALTER TABLE events DROP CONSTRAINT IF EXISTS events_stream_id_fkey;
ALTER TABLE tiles DROP CONSTRAINT IF EXISTS tiles_stream_id_fkey;
