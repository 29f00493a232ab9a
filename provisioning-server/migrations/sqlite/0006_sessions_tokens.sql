-- Browser sessions, API tokens, password resets, and where audited actions came from.
-- Every secret is kept only as its SHA-256: a dump of these tables logs nobody in.

-- A session is a 128-bit random cookie. It ends at expires_at (absolute) or when no
-- request came for the configured idle time after last_seen_at.
CREATE TABLE sessions (
    token_hash    BLOB PRIMARY KEY,
    user_id       TEXT NOT NULL REFERENCES users (id),
    created_at    INTEGER NOT NULL,
    last_seen_at  INTEGER NOT NULL,
    expires_at    INTEGER NOT NULL,
    source        TEXT
);
CREATE INDEX sessions_user ON sessions (user_id);

-- A bearer token for scripts, holding a subset of its user's permissions (space-separated
-- names; at use, also cut down to what the user still holds).
CREATE TABLE api_tokens (
    id            TEXT PRIMARY KEY,
    token_hash    BLOB NOT NULL UNIQUE,
    user_id       TEXT NOT NULL REFERENCES users (id),
    name          TEXT NOT NULL,
    permissions   TEXT NOT NULL,
    created_at    INTEGER NOT NULL,
    expires_at    INTEGER,
    last_used_at  INTEGER,
    revoked_at    INTEGER
);
CREATE INDEX api_tokens_user ON api_tokens (user_id);

-- "Forgot password" links: the same rules as invitations (hashed, single use, 72 hours,
-- a new one replaces the old).
CREATE TABLE password_resets (
    token_hash   BLOB PRIMARY KEY,
    user_id      TEXT NOT NULL REFERENCES users (id),
    created_at   INTEGER NOT NULL,
    expires_at   INTEGER NOT NULL,
    used_at      INTEGER,
    replaced_at  INTEGER
);
CREATE INDEX password_resets_user ON password_resets (user_id);

-- The source address an audited action came from (NULL for the CLI and the server).
ALTER TABLE audit_log ADD COLUMN source TEXT;
CREATE INDEX audit_log_at ON audit_log (at);
