//! Limited inserts and `creating` records. The count and the insert are one statement in an
//! immediate transaction on the single writer connection, so no other write, of this process
//! or another on the same file, can come between them.

use std::sync::LazyLock;

use rusqlite::params;
use stacyvm_types::Sandbox;

use super::db::{exec, first, Db};
use super::sandboxes::{values, RowText, COLUMNS};
use crate::admission::first_hit;
use crate::statements::active_sandbox;
use crate::statements::sandboxes::INSERT_BY;
use crate::{InsertLimits, StoreError};

/// The active-row predicate, repeated from the partial indexes.
const ACTIVE: &str = active_sandbox!();

/// `?24..?26` are the limits (0 = none); the counts repeat the active-row index predicate.
/// Paused sandboxes count for their worker (they hold its resources) but not for the total
/// or the owner (`max_paused_sandboxes` limits them).
pub(super) static INSERT_LIMITED: LazyLock<String> = LazyLock::new(|| {
    format!(
        "INSERT INTO sandboxes ({COLUMNS}, created_by) \
         SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, \
                ?18, ?19, ?20, ?21, ?22, ?23 \
         WHERE (?24 = 0 OR (SELECT COUNT(*) FROM sandboxes \
                  WHERE {ACTIVE} AND state <> 'paused') < ?24) \
           AND (?25 = 0 OR ?9 = '' OR (SELECT COUNT(*) FROM sandboxes \
                  WHERE {ACTIVE} AND state <> 'paused' \
                  AND owner_id = ?9) < ?25) \
           AND (?26 = 0 OR (SELECT COUNT(*) FROM sandboxes \
                  WHERE {ACTIVE} AND worker_id = ?11) < ?26)"
    )
});

const COUNTS: &str = concat!(
    "SELECT (SELECT COUNT(*) FROM sandboxes WHERE ",
    active_sandbox!(),
    " AND state <> 'paused'), (SELECT COUNT(*) FROM sandboxes WHERE ",
    active_sandbox!(),
    " AND state <> 'paused' AND owner_id = ?1 AND ?1 <> ''), \
     (SELECT COUNT(*) FROM sandboxes WHERE ",
    active_sandbox!(),
    " AND worker_id = ?2)"
);

pub(super) async fn insert_limited(
    db: &Db,
    sb: &Sandbox,
    limits: &InsertLimits<'_>,
) -> Result<(), StoreError> {
    let text = RowText::of(sb)?;
    let (max_total, max_owner, max_worker) = (
        limits.max_total.max(0),
        limits.max_owner.max(0),
        limits.max_worker.max(0),
    );
    db.write("sandbox", |c| {
        // Built inside: `&dyn ToSql` is not `Send`, so it must not live across the lock's await.
        let mut args = values(sb, &text);
        args.push(&limits.created_by);
        if !limits.any() {
            // No count to take: a plain insert, without `INSERT .. SELECT`'s row buffer.
            exec(c, "sandbox", INSERT_BY, args.as_slice())?;
            return Ok(());
        }
        args.extend([&max_total as &dyn rusqlite::ToSql, &max_owner, &max_worker]);
        let inserted = exec(c, "sandbox", &INSERT_LIMITED, args.as_slice())?;
        if inserted == 1 {
            return Ok(());
        }
        // Refused: say which limit (only the message depends on it).
        let counts = first(
            c,
            "sandbox count",
            COUNTS,
            params![sb.owner_id, crate::columns::worker_id(sb)],
            |r| {
                let n = |i| {
                    r.get::<_, i64>(i)
                        .map_err(|_| StoreError::Corrupt { what: "count" })
                };
                Ok([n(0)?, n(1)?, n(2)?])
            },
        )?
        .unwrap_or_default();
        Err(StoreError::LimitReached(first_hit(
            limits,
            &sb.owner_id,
            counts,
        )))
    })
    .await
}
