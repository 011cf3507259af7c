//! `GET /sandboxes?limit=N&cursor=C`: the live sandboxes one page at a time, newest first.
//! The cursor names the last sandbox of the previous page by its position in that order
//! (`created_at`, then id, both descending), so sandboxes created or destroyed between two
//! pages neither shift nor repeat the others.

use std::fmt;
use std::str::FromStr;

use stacyvm_types::Sandbox;

use super::Sandboxes;
use crate::error::{ServiceError, ServiceResult};

/// The most a page may hold.
pub const MAX_PAGE: usize = 1000;

/// Where a page starts: after this sandbox in the list's order. Opaque to clients:
/// `<created_at in Unix nanoseconds>.<id>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageCursor {
    created_nanos: i64,
    id: String,
}

impl PageCursor {
    fn after(sb: &Sandbox) -> Self {
        PageCursor {
            created_nanos: nanos(sb),
            id: sb.id.to_string(),
        }
    }

    /// Whether the cursor comes before `sb` in newest-first order (`sb` is older, or as old
    /// with a smaller id).
    fn precedes(&self, sb: &Sandbox) -> bool {
        (nanos(sb), sb.id.as_str()) < (self.created_nanos, self.id.as_str())
    }
}

fn nanos(sb: &Sandbox) -> i64 {
    sb.created_at.timestamp_nanos_opt().unwrap_or(i64::MAX)
}

impl fmt::Display for PageCursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.created_nanos, self.id)
    }
}

impl FromStr for PageCursor {
    type Err = ServiceError;
    fn from_str(s: &str) -> Result<Self, ServiceError> {
        let bad = || {
            ServiceError::bad_request(
                "invalid input: cursor must be the X-Next-Cursor of the previous page",
            )
        };
        let (n, id) = s.split_once('.').ok_or_else(bad)?;
        let created_nanos = n.parse().map_err(|_| bad())?;
        if !id.starts_with("sb-")
            || !id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(bad());
        }
        Ok(PageCursor {
            created_nanos,
            id: id.to_string(),
        })
    }
}

/// One page of [`Sandboxes::list_page`].
#[derive(Debug, Clone)]
pub struct SandboxPage {
    pub items: Vec<Sandbox>,
    /// Where the next page starts; `None` on the last page.
    pub next: Option<PageCursor>,
    /// Live sandboxes in the whole list (what [`Sandboxes::list`] would return).
    pub total: usize,
}

impl Sandboxes<'_> {
    /// Up to `limit` (1..=[`MAX_PAGE`]) live sandboxes after `cursor`, newest first.
    pub async fn list_page(
        self,
        limit: usize,
        cursor: Option<&PageCursor>,
    ) -> ServiceResult<SandboxPage> {
        if !(1..=MAX_PAGE).contains(&limit) {
            return Err(ServiceError::bad_request(format!(
                "invalid input: limit must be between 1 and {MAX_PAGE}"
            )));
        }
        let mut all = self.list().await?;
        Ok(page(&mut all, limit, cursor))
    }
}

fn page(all: &mut Vec<Sandbox>, limit: usize, cursor: Option<&PageCursor>) -> SandboxPage {
    let total = all.len();
    all.sort_by(|a, b| (nanos(b), b.id.as_str()).cmp(&(nanos(a), a.id.as_str())));
    let start = cursor.map_or(0, |c| all.partition_point(|sb| !c.precedes(sb)));
    let mut items: Vec<Sandbox> = all.drain(start..).take(limit + 1).collect();
    let next = if items.len() > limit {
        items.truncate(limit);
        items.last().map(PageCursor::after)
    } else {
        None
    };
    SandboxPage { items, next, total }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use chrono::{TimeZone, Utc};
    use stacyvm_types::SandboxState;

    use super::*;

    fn sb(id: &str, secs: i64) -> Sandbox {
        let t = Utc.timestamp_opt(1_800_000_000 + secs, 0).unwrap();
        stacyvm_store::conformance::sandbox(id, "", SandboxState::Running, t)
    }

    fn ids(p: &SandboxPage) -> Vec<String> {
        p.items.iter().map(|s| s.id.to_string()).collect()
    }

    #[test]
    fn pages_walk_newest_first_without_repeats_or_gaps() {
        // Two share a second: the id orders them.
        let mut all = vec![
            sb("sb-0000000a", 1),
            sb("sb-0000000c", 3),
            sb("sb-0000000b", 3),
            sb("sb-0000000d", 2),
        ];
        let p1 = page(&mut all.clone(), 2, None);
        assert_eq!(ids(&p1), ["sb-0000000c", "sb-0000000b"]);
        assert_eq!(p1.total, 4);
        let c = p1.next.clone().unwrap();
        assert_eq!(c.to_string().parse::<PageCursor>().unwrap(), c);
        // A sandbox created between the pages does not shift the next one.
        all.push(sb("sb-0000000e", 9));
        let p2 = page(&mut all.clone(), 2, Some(&c));
        assert_eq!(ids(&p2), ["sb-0000000d", "sb-0000000a"]);
        assert!(p2.next.is_none());
        // The cursor's own sandbox destroyed in between: still after it.
        all.retain(|s| s.id.as_str() != "sb-0000000b");
        let p2 = page(&mut all, 1, Some(&c));
        assert_eq!(ids(&p2), ["sb-0000000d"]);
        assert!(p2.next.is_some());
    }

    #[test]
    fn bad_cursors_are_refused() {
        for c in ["", "12", "x.sb-0000000a", "12.not-an-id", "12."] {
            assert!(c.parse::<PageCursor>().is_err(), "{c:?}");
        }
    }
}
