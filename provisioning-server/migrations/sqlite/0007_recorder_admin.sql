-- Recorders in the admin API: a name people give a recorder (NULL: none, the serial
-- shows), and when an admin confirmed that a recorder flagged at enrollment as a possible
-- replacement (`replaces`) does replace the old one, which that confirmation revoked.
ALTER TABLE recorders ADD COLUMN name TEXT;
ALTER TABLE recorders ADD COLUMN replacement_confirmed_at INTEGER;
-- A recorder's history is its audit entries, read by recorder id.
CREATE INDEX audit_log_recorder ON audit_log (recorder_id);
