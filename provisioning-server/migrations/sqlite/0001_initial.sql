-- Accounts form a tree: partner -> sub-partners -> customers.
CREATE TABLE accounts (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    kind        TEXT NOT NULL CHECK (kind IN ('partner', 'customer')),
    parent_id   TEXT REFERENCES accounts (id),
    created_at  INTEGER NOT NULL
);
CREATE INDEX accounts_parent ON accounts (parent_id);

-- Registration codes. Only the SHA-256 of the secret part is kept: a dump of this table
-- gives no working code. Rotated codes stay, disabled, for the audit trail.
CREATE TABLE registration_codes (
    public_id    TEXT PRIMARY KEY,
    account_id   TEXT NOT NULL REFERENCES accounts (id),
    secret_hash  BLOB NOT NULL,
    created_at   INTEGER NOT NULL,
    disabled_at  INTEGER
);
CREATE INDEX registration_codes_account ON registration_codes (account_id);

-- Recorders. Identity is the key: one row per key fingerprint.
CREATE TABLE recorders (
    id               TEXT PRIMARY KEY,
    account_id       TEXT NOT NULL REFERENCES accounts (id),
    key_fingerprint  TEXT NOT NULL UNIQUE,
    serial           TEXT NOT NULL,
    mac              TEXT,
    model            TEXT NOT NULL,
    firmware         TEXT,
    agent_version    TEXT,
    replaces         TEXT REFERENCES recorders (id),
    enrolled_at      INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL,
    cert_serial      TEXT,
    cert_not_after   INTEGER,
    last_seen        INTEGER,
    online_until     INTEGER,
    status           TEXT,
    revoked_at       INTEGER
);
CREATE INDEX recorders_account ON recorders (account_id);
CREATE INDEX recorders_serial ON recorders (serial);

-- Every enrollment, move, code rotation, revocation and admin action.
CREATE TABLE audit_log (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    at           INTEGER NOT NULL,
    actor        TEXT NOT NULL,
    action       TEXT NOT NULL,
    account_id   TEXT,
    recorder_id  TEXT,
    detail       TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX audit_log_account ON audit_log (account_id);
