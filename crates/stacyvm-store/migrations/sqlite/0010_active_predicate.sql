-- The active partial indexes of 0007, with their predicate written as three `<>` instead of
-- `NOT IN (...)`. SQLite evaluates a partial index's predicate on every insert and on both
-- rows of every update that touches `state`, and a constant list of more than two values is
-- answered with a freshly built ephemeral table: two to four of them per sandbox write, about
-- 15% of spawn+destroy throughput. Queries repeat this predicate verbatim
-- (`statements::active_sandbox!`). The Postgres twin is
-- migrations/postgres/0010_active_predicate.sql.
DROP INDEX sandboxes_active_by_owner;
CREATE INDEX sandboxes_active_by_owner ON sandboxes (owner_id)
    WHERE state <> 'destroyed' AND state <> 'expired' AND state <> 'destroying';
DROP INDEX sandboxes_active_by_expiry;
CREATE INDEX sandboxes_active_by_expiry ON sandboxes (expires_at)
    WHERE state <> 'destroyed' AND state <> 'expired' AND state <> 'destroying';
