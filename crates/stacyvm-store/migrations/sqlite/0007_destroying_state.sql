-- `destroying` (sandbox-model.md §2: destroy asked while the owning worker is away) is not
-- active: the active partial indexes leave it out like `destroyed` and `expired`, and the
-- queries repeat this predicate verbatim so the planner can use them.
DROP INDEX sandboxes_active_by_owner;
CREATE INDEX sandboxes_active_by_owner ON sandboxes (owner_id)
    WHERE state NOT IN ('destroyed', 'expired', 'destroying');
DROP INDEX sandboxes_active_by_expiry;
CREATE INDEX sandboxes_active_by_expiry ON sandboxes (expires_at)
    WHERE state NOT IN ('destroyed', 'expired', 'destroying');
