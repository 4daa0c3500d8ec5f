//! Pieces every software port shares: queue ownership and made-up interface
//! indexes.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;

use crate::PortError;

/// The first interface index given to ports without a kernel interface.
/// Well above what a test machine's kernel hands out, so a made-up index
/// and a real one rarely meet in one devmap.
pub(crate) const FIRST_SYNTHETIC_IFINDEX: u32 = 1000;

static NEXT_IFINDEX: AtomicU32 = AtomicU32::new(FIRST_SYNTHETIC_IFINDEX);

/// A fresh interface index for a port that has no kernel interface
/// (process-wide, never reused).
pub(crate) fn next_ifindex() -> u32 {
    NEXT_IFINDEX.fetch_add(1, Ordering::Relaxed)
}

/// Which of a port's queues (of one direction) are open. A queue has at
/// most one open handle at a time; the handle's [`Claim`] gives the queue
/// back when it is dropped, so a restarted worker can open it again.
#[derive(Debug)]
pub(crate) struct Claims {
    port: String,
    taken: Box<[AtomicBool]>,
}

impl Claims {
    /// Claims for `count` queues of port `port`.
    pub(crate) fn new(port: &str, count: u16) -> Arc<Claims> {
        Arc::new(Claims {
            port: port.to_string(),
            taken: (0..count).map(|_| AtomicBool::new(false)).collect(),
        })
    }

    /// Takes queue `q`.
    ///
    /// # Errors
    /// [`PortError::QueueOutOfRange`] or [`PortError::QueueInUse`].
    pub(crate) fn claim(self: &Arc<Self>, q: u16) -> Result<Claim, PortError> {
        let Some(flag) = self.taken.get(usize::from(q)) else {
            return Err(PortError::QueueOutOfRange {
                port: self.port.clone(),
                queue: q,
                count: self.taken.len() as u16,
            });
        };
        if flag.swap(true, Ordering::AcqRel) {
            return Err(PortError::QueueInUse {
                port: self.port.clone(),
                queue: q,
            });
        }
        Ok(Claim {
            claims: Arc::clone(self),
            queue: q,
        })
    }
}

/// An open queue's hold on its index; released on drop.
#[derive(Debug)]
pub(crate) struct Claim {
    claims: Arc<Claims>,
    queue: u16,
}

impl Claim {
    /// The queue index.
    pub(crate) fn queue(&self) -> u16 {
        self.queue
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        self.claims.taken[usize::from(self.queue)].store(false, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_queue_is_held_once_and_given_back_on_drop() {
        let c = Claims::new("p", 2);
        let a = c.claim(1).unwrap();
        assert_eq!(a.queue(), 1);
        assert!(matches!(
            c.claim(1),
            Err(PortError::QueueInUse { queue: 1, .. })
        ));
        assert!(matches!(
            c.claim(2),
            Err(PortError::QueueOutOfRange {
                queue: 2,
                count: 2,
                ..
            })
        ));
        drop(a);
        c.claim(1).unwrap();
    }

    #[test]
    fn ifindexes_are_unique_and_synthetic() {
        let a = next_ifindex();
        let b = next_ifindex();
        assert!(a >= FIRST_SYNTHETIC_IFINDEX && b > a);
    }
}
