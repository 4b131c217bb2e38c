//! The journal's one writer thread: requests queued while a transaction commits are
//! committed together in the next (group commit), and what it committed is counted.

use super::*;

/// What a journal's writer committed since it was opened: each group is one transaction
/// (one durable write), holding the requests that queued while the one before was written.
#[derive(Debug, Default)]
pub struct WriterStats {
    /// Transactions committed.
    pub groups: std::sync::atomic::AtomicU64,
    /// Records appended in them.
    pub records: std::sync::atomic::AtomicU64,
}

/// The writer thread: takes every waiting request and commits them together.
pub(super) fn write_loop(
    mut conn: Writer,
    rx: mpsc::Receiver<Request>,
    mut last: u64,
    stats: &WriterStats,
) {
    while let Ok(first) = rx.recv() {
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(r) => group.push(r),
                Err(_) => break,
            }
        }
        match conn.commit(&group, last) {
            Ok(new_last) => {
                use std::sync::atomic::Ordering::Relaxed;
                stats.groups.fetch_add(1, Relaxed);
                stats.records.fetch_add(new_last - last, Relaxed);
                let mut next = last + 1;
                for r in group {
                    match r {
                        Request::Append { bodies, done, .. } => {
                            let end = next + bodies.len() as u64;
                            let _ = done.send(Ok(next..end));
                            next = end;
                        }
                        Request::Snapshot { done, .. }
                        | Request::Rewrite { done, .. }
                        | Request::Compact { done, .. }
                        | Request::History { done, .. } => {
                            let _ = done.send(Ok(()));
                        }
                    }
                }
                last = new_last;
            }
            Err(e) => {
                // Nothing of the group is on disk; every caller hears why. The journal stops:
                // the caller's memory is now ahead of the disk, which only a restart (replay)
                // makes whole again.
                let reason = e;
                for r in group {
                    let err = || StoreError::Open {
                        path: "journal".into(),
                        reason: format!("commit failed: {reason}"),
                    };
                    match r {
                        Request::Append { done, .. } => {
                            let _ = done.send(Err(err()));
                        }
                        Request::Snapshot { done, .. }
                        | Request::Rewrite { done, .. }
                        | Request::Compact { done, .. }
                        | Request::History { done, .. } => {
                            let _ = done.send(Err(err()));
                        }
                    }
                }
                return;
            }
        }
    }
}
