-- Several codes per account, each with its own limits and last use, and the whole code kept
-- sealed (AES-256-GCM) under a key in the data directory's secrets/, never in this file: a
-- dump of the database alone gives no working code. Codes created before this migration
-- have no ciphertext (only their hash was ever kept) and can only be rotated to be seen.
ALTER TABLE registration_codes ADD COLUMN label TEXT NOT NULL DEFAULT '';
ALTER TABLE registration_codes ADD COLUMN expires_at INTEGER NULL;
ALTER TABLE registration_codes ADD COLUMN max_uses INTEGER NULL;
ALTER TABLE registration_codes ADD COLUMN uses INTEGER NOT NULL DEFAULT 0;
ALTER TABLE registration_codes ADD COLUMN created_by TEXT NOT NULL DEFAULT '';
ALTER TABLE registration_codes ADD COLUMN last_used_at INTEGER NULL;
ALTER TABLE registration_codes ADD COLUMN last_used_recorder TEXT NULL;
ALTER TABLE registration_codes ADD COLUMN code_nonce BLOB NULL;
ALTER TABLE registration_codes ADD COLUMN code_ciphertext BLOB NULL;
