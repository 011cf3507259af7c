//! Bounds log lines an outside caller can cause (rejected credentials): a flood of bad requests
//! must not turn into a flood of WARN lines.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// At most `burst` lines per `window`; the lines held back are counted and reported with the
/// next line let through.
pub(crate) struct LogThrottle {
    burst: u32,
    window: Duration,
    state: Mutex<State>,
}

struct State {
    window_start: Option<Instant>,
    in_window: u32,
    held_back: u64,
}

impl LogThrottle {
    pub(crate) const fn new(burst: u32, window: Duration) -> Self {
        LogThrottle {
            burst,
            window,
            state: Mutex::new(State {
                window_start: None,
                in_window: 0,
                held_back: 0,
            }),
        }
    }

    /// `Some(n)` when a line may be written now, `n` lines having been held back since the
    /// last one; `None` when this line is to be held back.
    pub(crate) fn admit(&self) -> Option<u64> {
        self.admit_at(Instant::now())
    }

    fn admit_at(&self, now: Instant) -> Option<u64> {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if s.window_start
            .is_none_or(|t| now.duration_since(t) >= self.window)
        {
            s.window_start = Some(now);
            s.in_window = 0;
        }
        if s.in_window >= self.burst {
            s.held_back += 1;
            return None;
        }
        s.in_window += 1;
        Some(std::mem::take(&mut s.held_back))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lets_a_burst_through_then_counts_what_it_holds_back() {
        let t = LogThrottle::new(3, Duration::from_secs(60));
        let t0 = Instant::now();
        let got: Vec<_> = (0..10).map(|_| t.admit_at(t0)).collect();
        assert_eq!(got[..3], [Some(0), Some(0), Some(0)]);
        assert!(got[3..].iter().all(Option::is_none));
        // The next window reports the seven lines held back.
        assert_eq!(t.admit_at(t0 + Duration::from_secs(61)), Some(7));
        assert_eq!(t.admit_at(t0 + Duration::from_secs(61)), Some(0));
    }
}
