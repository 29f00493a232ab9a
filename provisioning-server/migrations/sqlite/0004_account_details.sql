-- Account details and disabling. An account is *effectively* disabled when it or any
-- ancestor has disabled_at set; that is computed when read (see ACCOUNT_SELECT in
-- store/sqlite.rs), never stored per descendant, so enabling a partner restores its whole
-- subtree at once.
ALTER TABLE accounts ADD COLUMN address TEXT NOT NULL DEFAULT '';
ALTER TABLE accounts ADD COLUMN contact TEXT;
ALTER TABLE accounts ADD COLUMN disabled_at INTEGER;
ALTER TABLE accounts ADD COLUMN disabled_by TEXT;
