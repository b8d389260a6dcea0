//! The stream budget: every long-lived stream (a stateless `subscriptions/listen`, a
//! session's `GET /mcp`, a legacy `GET /sse`), over HTTP/1.1 and HTTP/2 alike, takes a
//! slot from its caller's budget and from the server's until it ends. Over HTTP/1.1 a
//! stream holds a whole connection for as long as it lasts (past `--idle-timeout`: it is
//! never idle), so the server's budget is at most half of `--max-connections`: streams
//! can never lock the other callers out.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

/// Streams one caller may hold by default.
pub const DEFAULT_PER_CALLER: u32 = 32;
/// The most streams the server holds by default (less when half of `--max-connections`
/// is less).
pub const DEFAULT_TOTAL: u32 = 1024;

/// The caps in force.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Caps {
    pub per_caller: usize,
    pub total: usize,
}

impl Caps {
    /// The caps from the flags (`None`: not given), checked against `--max-connections`.
    pub fn new(
        per_caller: Option<u32>,
        total: Option<u32>,
        max_connections: u32,
    ) -> Result<Caps, String> {
        let half = max_connections / 2;
        let total = match total {
            Some(total) if total > half => {
                return Err(format!(
                    "--max-streams {total} is more than half of --max-connections \
                     {max_connections}: over HTTP/1.1 each stream holds a connection, so \
                     streams could take every connection; use at most {half}"
                ));
            }
            Some(total) => total,
            None => DEFAULT_TOTAL.min(half),
        };
        let per_caller = match per_caller {
            Some(per_caller) if per_caller > total => {
                return Err(format!(
                    "--max-streams-per-caller {per_caller} is more than the server's stream \
                     budget, {total} (--max-streams, at most half of --max-connections)"
                ));
            }
            Some(per_caller) => per_caller,
            None => DEFAULT_PER_CALLER.min(total),
        };
        Ok(Caps {
            per_caller: per_caller as usize,
            total: total as usize,
        })
    }
}

/// The open streams, by owner; cheap to clone.
#[derive(Clone)]
pub struct Budget {
    open: Arc<Mutex<Open>>,
    caps: Caps,
}

#[derive(Default)]
struct Open {
    by_owner: HashMap<String, usize>,
    total: usize,
}

/// One stream's slot, given back when dropped (the stream ended or its client left).
pub struct Slot {
    open: Arc<Mutex<Open>>,
    owner: String,
}

impl std::fmt::Debug for Slot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Slot").field("owner", &self.owner).finish()
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        open.total = open.total.saturating_sub(1);
        if let Some(count) = open.by_owner.get_mut(&self.owner) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                open.by_owner.remove(&self.owner);
            }
        }
    }
}

/// Why a stream was refused.
#[derive(Debug, PartialEq, Eq)]
pub struct Spent {
    pub message: String,
}

impl Budget {
    pub fn new(caps: Caps) -> Self {
        Self {
            open: Arc::default(),
            caps,
        }
    }

    /// A slot for one more stream of `owner`, or why there is none.
    pub fn take(&self, owner: &str) -> Result<Slot, Spent> {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        let mine = open.by_owner.get(owner).copied().unwrap_or(0);
        if mine >= self.caps.per_caller {
            return Err(Spent {
                message: format!(
                    "this caller has {} streams open (--max-streams-per-caller): listen \
                     streams, GET /mcp and GET /sse count alike; close one or retry later",
                    self.caps.per_caller
                ),
            });
        }
        if open.total >= self.caps.total {
            return Err(Spent {
                message: format!(
                    "the server has {} streams open (--max-streams); retry later",
                    self.caps.total
                ),
            });
        }
        open.total += 1;
        *open.by_owner.entry(owner.to_owned()).or_default() += 1;
        Ok(Slot {
            open: self.open.clone(),
            owner: owner.to_owned(),
        })
    }

    /// Streams open now (all callers).
    pub fn open(&self) -> usize {
        self.open
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_default_within_half_the_connections_and_explicit_ones_are_checked() {
        let caps = Caps::new(None, None, 4096).unwrap();
        assert_eq!((caps.per_caller, caps.total), (32, 1024));
        let caps = Caps::new(None, None, 20).unwrap();
        assert_eq!((caps.per_caller, caps.total), (10, 10));
        let caps = Caps::new(None, None, 6).unwrap();
        assert_eq!((caps.per_caller, caps.total), (3, 3));
        assert!(Caps::new(None, Some(11), 20).unwrap_err().contains("half"));
        assert!(Caps::new(Some(11), None, 20).is_err());
        assert_eq!(Caps::new(Some(2), Some(4), 20).unwrap().per_caller, 2);
    }

    #[test]
    fn each_caller_has_its_budget_within_the_servers() {
        let budget = Budget::new(Caps {
            per_caller: 2,
            total: 3,
        });
        let a1 = budget.take("a").unwrap();
        let _a2 = budget.take("a").unwrap();
        assert!(budget.take("a").unwrap_err().message.contains("per-caller"));
        let _b1 = budget.take("b").unwrap();
        assert!(
            budget
                .take("c")
                .unwrap_err()
                .message
                .contains("--max-streams)")
        );
        drop(a1);
        assert_eq!(budget.open(), 2);
        let _c1 = budget.take("c").unwrap();
        assert!(budget.take("a").is_err());
    }
}
