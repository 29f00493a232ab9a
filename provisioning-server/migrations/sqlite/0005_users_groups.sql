-- Users, groups of permissions, and invitations. Emails are unique across the server,
-- case-insensitively (one login name per person). Passwords are Argon2id PHC strings, NULL
-- until the invitation is accepted. Invitation tokens are kept only as SHA-256.
CREATE TABLE users (
    id                 TEXT PRIMARY KEY,
    account_id         TEXT NOT NULL REFERENCES accounts (id),
    email              TEXT NOT NULL,
    name               TEXT NOT NULL,
    password_hash      TEXT,
    status             TEXT NOT NULL CHECK (status IN ('invited', 'active', 'disabled')),
    created_at         INTEGER NOT NULL,
    created_by         TEXT NOT NULL,
    terms_version      TEXT,
    terms_accepted_at  INTEGER,
    age_confirmed_at   INTEGER
);
CREATE UNIQUE INDEX users_email ON users (lower(email));
CREATE INDEX users_account ON users (account_id);

CREATE TABLE groups (
    id          TEXT PRIMARY KEY,
    account_id  TEXT NOT NULL REFERENCES accounts (id),
    name        TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    UNIQUE (account_id, name)
);

CREATE TABLE group_permissions (
    group_id    TEXT NOT NULL REFERENCES groups (id),
    permission  TEXT NOT NULL CHECK (permission IN ('accounts.view', 'accounts.manage',
        'users.view', 'users.manage', 'groups.manage', 'codes.view', 'codes.manage',
        'recorders.view', 'recorders.manage', 'audit.view')),
    PRIMARY KEY (group_id, permission)
);

CREATE TABLE user_groups (
    user_id   TEXT NOT NULL REFERENCES users (id),
    group_id  TEXT NOT NULL REFERENCES groups (id),
    PRIMARY KEY (user_id, group_id)
);
CREATE INDEX user_groups_group ON user_groups (group_id);

CREATE TABLE invitations (
    token_hash   BLOB PRIMARY KEY,
    user_id      TEXT NOT NULL REFERENCES users (id),
    created_at   INTEGER NOT NULL,
    expires_at   INTEGER NOT NULL,
    used_at      INTEGER,
    replaced_at  INTEGER
);
CREATE INDEX invitations_user ON invitations (user_id);

-- Every existing account gets its Administrators group holding all ten permissions, as
-- accounts created from now on do (Store::create_account). Ids are random UUID-shaped text.
INSERT INTO groups (id, account_id, name, created_at)
SELECT lower(substr(h, 1, 8) || '-' || substr(h, 9, 4) || '-4' || substr(h, 14, 3) || '-8'
             || substr(h, 18, 3) || '-' || substr(h, 21, 12)),
       id, 'Administrators', CAST(strftime('%s', 'now') AS INTEGER)
FROM (SELECT id, hex(randomblob(16)) AS h FROM accounts);

INSERT INTO group_permissions (group_id, permission)
SELECT g.id, p.permission
FROM groups g
CROSS JOIN (SELECT 'accounts.view' AS permission UNION ALL SELECT 'accounts.manage'
    UNION ALL SELECT 'users.view' UNION ALL SELECT 'users.manage'
    UNION ALL SELECT 'groups.manage' UNION ALL SELECT 'codes.view'
    UNION ALL SELECT 'codes.manage' UNION ALL SELECT 'recorders.view'
    UNION ALL SELECT 'recorders.manage' UNION ALL SELECT 'audit.view') p
WHERE g.name = 'Administrators';
