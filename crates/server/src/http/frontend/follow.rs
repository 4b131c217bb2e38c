//! A frontend's copy of the state: loaded from the writer's snapshot, then brought forward by
//! the writer's durable records, each applied as a restart's replay applies it (restored,
//! never decided). The copy's version is the record it holds; agents waiting on nodes hear of
//! the nodes each record changed, and the event stream is told of it, as on the writer. A
//! record that does not follow (a journal compacted past it, a gap, one that does not apply)
//! makes the copy load the snapshot again.

use super::*;

/// The longest one ask for records waits at the writer.
const MAX_WAIT: Duration = Duration::from_secs(25);

/// The writer's state now, as a copy this frontend can follow (with the cell's name).
pub(super) fn load(up: &Upstream) -> Result<(ControlPlane, String), StartError> {
    let snapshot = up
        .client
        .replica_snapshot()
        .map_err(|e| StartError::Writer(e.to_string()))?;
    let mut plane = ControlPlane::from_snapshot(&snapshot.body)?;
    if plane.seq() != snapshot.seq {
        return Err(StartError::Writer(format!(
            "the snapshot said record {} and holds record {}",
            snapshot.seq,
            plane.seq()
        )));
    }
    plane.set_cell(&snapshot.cell);
    if let Some(key) = &up.secret_key {
        plane.set_secret_key(key.clone());
    }
    Ok((plane, snapshot.cell))
}

/// Applies every record the writer holds now (at start, before serving).
pub(super) fn catch_up(server: &Server) -> Result<(), StartError> {
    let Backing::Writer(up) = &server.backing else {
        return Ok(());
    };
    loop {
        let after = server.plane().seq();
        let records = up
            .client
            .replica_records(after, Duration::ZERO)
            .map_err(|e| StartError::Writer(e.to_string()))?;
        up.reached_now();
        if records.is_empty() {
            return Ok(());
        }
        apply(server, records).map_err(|e| StartError::Writer(e.to_string()))?;
    }
}

/// Follows the writer for as long as the frontend runs (on a thread of its own: the client
/// blocks). A writer that cannot be reached is asked again every second; reads are answered
/// from the copy meanwhile.
pub(super) fn follow(server: &Arc<Server>) {
    let Backing::Writer(up) = &server.backing else {
        return;
    };
    // Asked at least as often as the writer is told which nodes are alive: an answer, even
    // an empty one, is what tells the frontend the writer is there (see `fanin.rs`).
    let wait = up.alive_every.clamp(Duration::from_millis(100), MAX_WAIT);
    let client = up
        .client
        .clone()
        .with_timeout(wait + Duration::from_secs(30));
    let mut unreachable_since: Option<Instant> = None;
    loop {
        if up.stopped.load(std::sync::atomic::Ordering::Relaxed) {
            return;
        }
        let after = server.plane().seq();
        match client.replica_records(after, wait) {
            Ok(records) => {
                unreachable_since = None;
                up.reached_now();
                if let Err(e) = apply(server, records) {
                    tracing::warn!("{e}: loading the writer's snapshot again");
                    reload(server, up);
                }
            }
            Err(wire::ClientError::Refused { status: 410, .. }) => {
                tracing::info!("the writer's journal was compacted: loading its snapshot");
                reload(server, up);
            }
            Err(e) => {
                if unreachable_since.is_none() {
                    tracing::warn!("following the writer: {e}");
                    unreachable_since = Some(Instant::now());
                }
                std::thread::sleep(Duration::from_secs(1));
            }
        }
    }
}

/// Applies `records` in order; the copy's version moves once, after the last, and the agents
/// waiting on the nodes they changed are woken then.
fn apply(server: &Server, records: Vec<wire::replica::ReplicaRecord>) -> Result<(), StateError> {
    let Some(last) = records.last().map(|r| r.seq) else {
        return Ok(());
    };
    let changed = {
        let mut p = server.plane();
        for r in records {
            let stored = crate::journal::decode(&r.body).map_err(|e| StateError::Sequence {
                record: r.seq,
                reason: e.to_string(),
            })?;
            let record = p.follow(r.seq, stored)?;
            let told = p.told(&record);
            server.event_log().record(r.seq, record.event.at(), told);
        }
        p.take_changed_nodes()
    };
    server.durable.send_if_modified(|d| {
        let newer = last > *d;
        *d = (*d).max(last);
        newer
    });
    server.change_log().publish(last, changed);
    Ok(())
}

/// Replaces the copy with the writer's snapshot (tried until the writer gives one).
fn reload(server: &Server, up: &Upstream) {
    loop {
        match load(up) {
            Ok((plane, _)) => {
                let seq = plane.seq();
                *server.plane() = plane;
                server.durable.send_replace(seq);
                // What happened in between is not known: readers of the event stream resync,
                // and agents waiting on changes look at every node.
                *server.event_log() = crate::events::EventLog::new(crate::events::KEPT_EVENTS, seq);
                server.change_log().forget_through(seq);
                up.reached_now();
                return;
            }
            Err(e) => {
                tracing::warn!("loading the writer's snapshot: {e}");
                std::thread::sleep(Duration::from_secs(1));
            }
        }
    }
}
