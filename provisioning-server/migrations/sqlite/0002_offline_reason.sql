-- Why a recorder went offline: 'shutdown' (its agent said goodbye) is told apart from
-- heartbeats that simply stopped (NULL while online or after missed heartbeats).
ALTER TABLE recorders ADD COLUMN offline_reason TEXT;
