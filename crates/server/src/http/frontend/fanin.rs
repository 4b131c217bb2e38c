//! Agents' heartbeats fanned in at a frontend. A heartbeat is passed on to the writer only
//! when the writer must see it: it changes the state (the node comes up, tasks ended, a new
//! checkpoint), it carries logs or its node's logs are being read, its node offers other
//! templates, or its node is heard through this frontend for the first time. Every other
//! heartbeat is liveness alone: its node joins the compact list of live nodes (a hostlist
//! expression) the writer is sent every `alive_every`. Answers are read from the frontend's
//! copy, once it holds the record the writer answered at, so an agent never hears of work
//! older than what it was already told, nor of work that is not durable.

use super::*;
use crate::api::{Heartbeats, NodeAnswer};

/// Most node names in one list of live nodes (its expression stays well under the body limit
/// however the names fall).
const ALIVE_PER_REQUEST: usize = 20_000;

/// How long an answer waits for the copy to reach the record the writer answered at.
const CATCH_UP: Duration = Duration::from_secs(5);

/// A frontend's heartbeat path (see the module's doc). Returns the answers of the nodes with
/// news and the record they were read at.
pub(in crate::http) async fn beat_through_writer(
    server: &Arc<Server>,
    up: &Upstream,
    caller: &(Role, String),
    beats: Vec<Heartbeat>,
) -> Result<(Vec<NodeAnswer>, u64), Refusal> {
    server.reporter(caller, beats.iter().map(|b| b.node.as_str()))?;
    if !up.writer_reached_lately() {
        return Err(Refusal::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "",
            "this frontend cannot reach the cell's writer",
        ));
    }
    server.metrics.heartbeats.inc_by(beats.len() as u64);
    let mut refused: Vec<Option<FieldProblem>> = vec![None; beats.len()];
    let mut pass_on = vec![false; beats.len()];
    {
        let logs_on = up.logs_on();
        let p = server.plane();
        let at = p.stamp(unix_now());
        let seen = server.seen();
        let templates = server.templates();
        for (i, hb) in beats.iter().enumerate() {
            match p.heartbeat_events(hb, at) {
                Err(problem) => refused[i] = Some(problem),
                Ok(events) => {
                    // An agent that holds other work than the copy's was told by a copy
                    // further on (another frontend, or the writer): the writer answers, and
                    // this copy catches up before it does.
                    let stale = hb
                        .known
                        .is_some_and(|k| k != p.assignment_digest(&hb.node).unwrap_or(0));
                    pass_on[i] = stale
                        || !events.is_empty()
                        || !hb.logs.is_empty()
                        || logs_on.contains(&hb.node)
                        || !seen.contains_key(&hb.node)
                        || !templates.offers_exactly(&hb.node, &hb.templates);
                }
            }
        }
    }
    let passed: Vec<Heartbeat> = beats
        .iter()
        .zip(&pass_on)
        .filter(|(_, p)| **p)
        .map(|(hb, _)| hb.clone())
        .collect();
    let mut logs_wanted: HashMap<String, Vec<crate::api::LogWanted>> = HashMap::new();
    let mut writer_at = 0;
    if !passed.is_empty() {
        server
            .metrics
            .heartbeats_passed_on
            .inc_by(passed.len() as u64);
        let reply = up
            .send(Heartbeats {
                beats: passed,
                alive: None,
            })
            .await?;
        writer_at = reply.seq;
        let index: HashMap<&str, usize> = beats
            .iter()
            .enumerate()
            .map(|(i, b)| (b.node.as_str(), i))
            .collect();
        for answer in reply.nodes {
            let Some(&i) = index.get(answer.node.as_str()) else {
                continue;
            };
            if answer.refused.is_some() {
                refused[i] = answer.refused;
            } else if !answer.logs_wanted.is_empty() {
                logs_wanted.insert(answer.node, answer.logs_wanted);
            }
        }
    }
    {
        let now = Instant::now();
        let mut seen = server.seen();
        let mut templates = server.templates();
        let mut alive = up.alive();
        for ((hb, refusal), passed) in beats.iter().zip(&refused).zip(&pass_on) {
            if refusal.is_some() {
                continue;
            }
            seen.insert(hb.node.clone(), now);
            if *passed {
                // The writer took them; a bad list was refused there.
                let _ = templates.offer(&hb.node, &hb.templates);
            } else {
                alive.insert(hb.node.clone());
            }
        }
    }
    // The copy must hold what the writer answered at before it answers for the beats passed
    // on; if it falls behind, those are left out of the answer (no news: their agents keep
    // what they hold and ask again) and the others are answered.
    let caught_up = tokio::time::timeout(CATCH_UP, server.durable_through(writer_at))
        .await
        .is_ok();
    let (mut answers, read_at) = {
        let p = server.plane();
        let answers: Vec<NodeAnswer> = beats
            .iter()
            .zip(refused)
            .zip(&pass_on)
            .filter_map(|((hb, refusal), passed)| match refusal {
                Some(problem) => Some(agents::refused_answer(&hb.node, problem)),
                None if *passed && !caught_up => None,
                None => Some(agents::answer_for(&p, hb)),
            })
            .collect();
        (answers, p.seq())
    };
    for answer in &mut answers {
        if let Some(wanted) = logs_wanted.remove(&answer.node) {
            answer.logs_wanted = wanted;
        }
    }
    answers.retain(|a| a.work.is_some() || a.refused.is_some() || !a.logs_wanted.is_empty());
    Ok((answers, read_at))
}

/// Tells the writer which nodes were heard from since it was last told (with nothing else to
/// pass on), in compact lists, and hears which nodes' logs are being read. Names the writer
/// did not take are told again next time.
pub(super) async fn tell_alive(server: &Arc<Server>) {
    let Backing::Writer(up) = &server.backing else {
        return;
    };
    let mut names: Vec<String> = up.alive().drain().collect();
    names.sort_unstable();
    if names.is_empty() {
        return;
    }
    for (i, chunk) in names.chunks(ALIVE_PER_REQUEST).enumerate() {
        let alive = model::hostlist::compress(chunk);
        if let Err(e) = up
            .send(Heartbeats {
                beats: Vec::new(),
                alive: Some(alive),
            })
            .await
        {
            tracing::warn!("telling the writer which nodes are alive: {}", e.reason());
            up.alive()
                .extend(names.into_iter().skip(i * ALIVE_PER_REQUEST));
            return;
        }
        server.metrics.alive_lists.inc();
    }
}
