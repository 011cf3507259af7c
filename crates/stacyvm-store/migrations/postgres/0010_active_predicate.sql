-- The active partial indexes with the predicate the queries share with SQLite
-- (`statements::active_sandbox!`; see migrations/sqlite/0010_active_predicate.sql for why it
-- is three `<>`). Postgres plans either form alike; one text keeps the two schemas and the
-- shared statements in step.
DROP INDEX sandboxes_active_by_owner;
CREATE INDEX sandboxes_active_by_owner ON sandboxes (owner_id)
    WHERE state <> 'destroyed' AND state <> 'expired' AND state <> 'destroying';
DROP INDEX sandboxes_active_by_expiry;
CREATE INDEX sandboxes_active_by_expiry ON sandboxes (expires_at)
    WHERE state <> 'destroyed' AND state <> 'expired' AND state <> 'destroying';
