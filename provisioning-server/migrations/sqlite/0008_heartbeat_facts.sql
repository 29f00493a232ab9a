-- Clock-driven status fields (uptime) are written with last_seen at every presence flush;
-- the rest of the status payload only when it changes.
ALTER TABLE recorders ADD COLUMN uptime_secs INTEGER;

-- What a heartbeat answer depends on, changed by anyone (this server, the admin CLI,
-- another replica): each server polls this to keep its in-memory facts coherent.
-- Written by triggers, so no write path can forget it. `at_ms` is the database's clock.
CREATE TABLE fact_changes (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    at_ms        INTEGER NOT NULL,
    recorder_id  TEXT,
    account_id   TEXT
);
CREATE INDEX fact_changes_at ON fact_changes (at_ms);

CREATE TRIGGER recorders_fact_update AFTER UPDATE OF account_id, key_fingerprint, revoked_at ON recorders
WHEN OLD.account_id IS NOT NEW.account_id
  OR OLD.key_fingerprint IS NOT NEW.key_fingerprint
  OR OLD.revoked_at IS NOT NEW.revoked_at
BEGIN
    INSERT INTO fact_changes (at_ms, recorder_id)
    VALUES (CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER), NEW.id);
END;

CREATE TRIGGER recorders_fact_delete AFTER DELETE ON recorders
BEGIN
    INSERT INTO fact_changes (at_ms, recorder_id)
    VALUES (CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER), OLD.id);
END;

CREATE TRIGGER accounts_fact_update AFTER UPDATE OF name, parent_id, disabled_at ON accounts
WHEN OLD.name IS NOT NEW.name
  OR OLD.parent_id IS NOT NEW.parent_id
  OR OLD.disabled_at IS NOT NEW.disabled_at
BEGIN
    INSERT INTO fact_changes (at_ms, account_id)
    VALUES (CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER), NEW.id);
END;
