//! Start-up: the server's configuration, the journal opened as its only writer, the latest
//! snapshot loaded and the records after it replayed (records of an older format upgraded
//! once), and the first admin token issued.

use super::*;

/// What the server was started with, for a journal that has no `Init` yet.
#[derive(Clone, Debug)]
pub struct Config {
    /// The journal's URL (see `store::parse_url`).
    pub store_url: String,
    /// The cell's name, as its capacity summary gives it (`GET /v1/cell`).
    pub cell: String,
    /// A fleet file's text; `None`: the small default fleet.
    pub fleet_toml: Option<String>,
    /// Tenants; `None`: one tenant, `default`.
    pub tenants: Option<Vec<model::TenantSpec>>,
    /// The longest a quiet queue goes without a pass, in seconds.
    pub idle_pass_interval: u64,
    /// A node whose agent has not been heard from for this long is down.
    pub heartbeat_timeout: Duration,
    /// Where the first admin token is written (mode 0600) when the journal has no token yet.
    pub admin_token_file: std::path::PathBuf,
    /// A snapshot is saved once this many records were journaled after the last one (0:
    /// never); a restart loads it and replays only what follows.
    pub snapshot_every: u64,
    /// The least time between two snapshots taken because records piled up (0: none).
    pub snapshot_min_interval: Duration,
    /// Replay the whole journal at start even when a snapshot exists (to recover from a
    /// snapshot suspected bad, or to compare).
    pub replay_all: bool,
    /// Prices and commitments for a new journal: the catalogue's rates are written into the
    /// fleet's pools, and its commitments into `Init` (a journal keeps the ones it began with).
    pub catalogue: Option<model::cost::CostCatalogue>,
    /// The queue's rules for what this server decides. Replayed history keeps what was decided
    /// under the rules of the build that wrote it.
    pub rules: sched::SchedConfig,
    /// What one request and one tenant may ask for (checked at admission only).
    pub limits: crate::state::Limits,
    /// The key file secret environment values are sealed under (made 0600 if missing; keep
    /// it outside the journal's database, and give standbys the same one). `None`: no
    /// secrets are accepted.
    pub secrets_key_file: Option<std::path::PathBuf>,
}

impl Config {
    /// A server of `store_url` keeping its files in `data_dir` (the first admin token, the
    /// secrets key), with the defaults `stargrid server` has: the default fleet and tenant,
    /// a heartbeat timeout of 10 s, a snapshot every 10,000 records, this build's rules and
    /// limits.
    pub fn new(store_url: String, data_dir: &std::path::Path) -> Config {
        Config {
            store_url,
            cell: "cell-0".into(),
            fleet_toml: None,
            tenants: None,
            idle_pass_interval: 60,
            heartbeat_timeout: Duration::from_secs(10),
            admin_token_file: data_dir.join("admin.token"),
            snapshot_every: 10_000,
            snapshot_min_interval: Duration::ZERO,
            replay_all: false,
            catalogue: None,
            rules: sched::SchedConfig::default(),
            limits: crate::state::Limits::default(),
            secrets_key_file: Some(data_dir.join("secrets.key")),
        }
    }
}

/// Errors of start-up.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The secrets key cannot be read or made.
    #[error("{0}")]
    Secrets(String),
    /// The journal cannot be opened or read.
    #[error(transparent)]
    Store(#[from] store::StoreError),
    /// A journal record is not an event of this build.
    #[error("journal record {seq}: {reason}")]
    Decode {
        /// The record.
        seq: u64,
        /// Why it does not decode.
        reason: String,
    },
    /// The journal does not replay.
    #[error(transparent)]
    State(#[from] StateError),
    /// A frontend's writer cannot be reached or followed.
    #[error("the writer: {0}")]
    Writer(String),
    /// The first admin token cannot be made or saved.
    #[error("admin token {path}: {reason}")]
    Token {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
}

/// Issues the first admin token and writes it where the operator can read it.
pub(super) fn issue_first_admin_token(
    plane: &mut ControlPlane,
    journal: &Journal,
    path: &std::path::Path,
) -> Result<(), StartError> {
    let err = |reason: String| StartError::Token {
        path: path.display().to_string(),
        reason,
    };
    let token = new_token().map_err(|e| err(e.to_string()))?;
    let event = Event::TokenIssued {
        hash: token_hash(&token),
        role: Role::Admin,
        at: plane.now(),
        expires_at: None,
    };
    let record = plane.apply(&event)?;
    {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(path)
            .map_err(|e| err(e.to_string()))?;
        writeln!(f, "{token}").map_err(|e| err(e.to_string()))?;
    }
    journal.append(vec![plane.encode(&record)]).wait()?;
    Ok(())
}

impl Server {
    /// Opens the journal and rebuilds the state from it (or starts a new one). Blocks: call it
    /// outside the async runtime (or in `spawn_blocking`).
    pub fn start(config: &Config) -> Result<Arc<Server>, StartError> {
        let shown = store::display_url(&config.store_url);
        let journal = Journal::open_as_writer(&config.store_url, &mut || {
            tracing::warn!("another server writes the journal {shown}; standing by until it stops");
        })?;
        for file in journal.fixed_permissions() {
            tracing::warn!("journal file {file} was readable by others; it is now 0600");
        }
        // Start from the latest snapshot, if this build reads it, then replay what follows.
        let mut plane = None;
        let mut from_snapshot = None;
        let latest = if config.replay_all {
            None
        } else {
            journal.latest_snapshot()?
        };
        if let Some((seq, body)) = latest {
            match ControlPlane::from_snapshot(&body) {
                Ok(p) if p.seq() == seq => {
                    plane = Some(p);
                    from_snapshot = Some(seq);
                }
                Ok(p) => tracing::warn!(
                    "snapshot at record {seq} holds record {}: replaying the whole journal",
                    p.seq()
                ),
                Err(e) => tracing::warn!("{e}: replaying the whole journal"),
            }
        }
        let mut after = from_snapshot.unwrap_or(0);
        let mut replayed = 0u64;
        // The event stream is told the latest records again (at least one event each, mostly),
        // so ids from before a restart resume; older ones are not worth the time.
        let tell_after = journal
            .last_seq()?
            .saturating_sub(crate::events::KEPT_EVENTS as u64)
            .max(after);
        let mut events = crate::events::EventLog::new(crate::events::KEPT_EVENTS, tell_after);
        let mut migrated = Vec::new();
        loop {
            let chunk = journal.read_after(after, 10_000)?;
            if chunk.is_empty() {
                break;
            }
            for r in chunk {
                let stored = crate::journal::decode(&r.body).map_err(|e| StartError::Decode {
                    seq: r.seq,
                    reason: e.to_string(),
                })?;
                let inputs_only = matches!(stored, crate::journal::Stored::Inputs(_));
                let replayed_one = ControlPlane::replay_one(&mut plane, r.seq, stored)?;
                if let Some(p) = plane.as_ref() {
                    // A record of format 0 is rewritten in the current format, with the
                    // decisions this build made for it.
                    if inputs_only && replayed_one.decided {
                        migrated.push(store::Record {
                            seq: r.seq,
                            body: p.encode(&replayed_one.record),
                        });
                    }
                    if r.seq > tell_after {
                        let at = replayed_one.record.event.at();
                        events.record(r.seq, at, p.told(&replayed_one.record));
                    }
                }
                after = r.seq;
                replayed += 1;
            }
        }
        if !migrated.is_empty() {
            let count = migrated.len();
            journal.rewrite(migrated).wait()?;
            tracing::warn!(
                "{count} journal records written by an older build were upgraded to format {}",
                crate::journal::FORMAT
            );
        }
        let plane = match plane {
            Some(p) => p,
            None => {
                let fleet_toml = match &config.fleet_toml {
                    Some(t) => t.clone(),
                    None => default_fleet_toml()?,
                };
                let (fleet_toml, commitments) = match &config.catalogue {
                    Some(c) => (
                        crate::state::price_fleet(&fleet_toml, c)?,
                        c.commitments.clone(),
                    ),
                    None => (fleet_toml, Vec::new()),
                };
                let init = Event::Init {
                    fleet_toml,
                    tenants: config.tenants.clone().unwrap_or_else(default_tenants),
                    at: unix_now(),
                    commitments,
                };
                let plane = ControlPlane::new(&init)?;
                let record = crate::journal::Record {
                    event: init,
                    decisions: Vec::new(),
                    outcome: Default::default(),
                };
                journal.append(vec![plane.encode(&record)]).wait()?;
                plane
            }
        };
        let replay_summary = match from_snapshot {
            Some(at) => format!("replayed {replayed} records after the snapshot at record {at}"),
            None => format!("replayed {replayed} records"),
        };
        tracing::info!("{replay_summary}");
        let mut plane = plane;
        if journal.schema_found() < store::HISTORY_INDEXED_SINCE {
            // A store of an older build: workloads that ended before it had no history row (or
            // one without its accounting). Written once, for every workload the state knows.
            let rows: Vec<store::HistoryRow> = plane.summaries().iter().map(|s| s.row()).collect();
            if !rows.is_empty() {
                let count = rows.len();
                journal.put_history(rows).wait()?;
                tracing::info!(count, "history written for workloads of an older build");
            }
        }
        // This build's rules (or the operator's) decide from now on, whatever a snapshot carried.
        plane.set_rules(config.rules.clone());
        if !plane.has_tokens() {
            issue_first_admin_token(&mut plane, &journal, &config.admin_token_file)?;
        }
        let now = Instant::now();
        let last_seen = plane.up_nodes().into_iter().map(|n| (n, now)).collect();
        plane.set_cell(&config.cell);
        if let Some(path) = &config.secrets_key_file {
            let key = crate::state::SecretKey::load_or_create(path)
                .map_err(|e| StartError::Secrets(e.to_string()))?;
            plane.set_secret_key(Arc::new(key));
        }
        // Every live interactive sandbox's idle clock starts now (it is not journaled).
        let mut sessions = crate::sessions::SessionClocks::default();
        for (id, expires_at, idle) in plane.live_sessions() {
            sessions.start(id.0, expires_at, idle, Instant::now());
        }
        let settings = Settings {
            idle_pass_interval: config.idle_pass_interval,
            heartbeat_timeout: config.heartbeat_timeout,
            cell: config.cell.clone(),
            snapshot_every: config.snapshot_every,
            snapshot_min_interval: config.snapshot_min_interval,
            last_snapshot: from_snapshot.unwrap_or(0),
            replay_summary,
            limits: config.limits.clone(),
            last_seen,
            sessions,
            events,
        };
        // Everything replayed or written so far is durable.
        Ok(Arc::new(Server::assemble(
            plane,
            Backing::Journal(journal),
            settings,
        )))
    }

    /// A server of `plane` (durable through its record) over `backing`.
    pub(super) fn assemble(plane: ControlPlane, backing: Backing, settings: Settings) -> Server {
        let (durable, _) = tokio::sync::watch::channel(plane.seq());
        Server {
            durable,
            plane: Mutex::new(plane),
            backing,
            idle_pass_interval: settings.idle_pass_interval.max(1),
            heartbeat_timeout: settings.heartbeat_timeout,
            cell: settings.cell,
            last_seen: Mutex::new(settings.last_seen),
            wake: tokio::sync::Notify::new(),
            changes: Mutex::new(ChangeLog::default()),
            snapshot_every: settings.snapshot_every,
            snapshot_min_interval: settings.snapshot_min_interval,
            snapshot_taken: Mutex::new(Instant::now()),
            last_snapshot: std::sync::atomic::AtomicU64::new(settings.last_snapshot),
            replay_summary: settings.replay_summary,
            logs: Mutex::new(LogTails::default()),
            departures_seen: Mutex::new(None),
            approvals_seen: Mutex::new(None),
            refused_reports: Mutex::new(HashMap::new()),
            limits: settings.limits,
            execs: Mutex::new(crate::execs::Execs::new(crate::execs::ExecLimits::default())),
            sessions: Mutex::new(settings.sessions),
            templates: Mutex::new(Default::default()),
            metrics: Default::default(),
            events: Mutex::new(settings.events),
            live_load: Mutex::new(Default::default()),
            rollouts_looked: Mutex::new(0),
            event_streams: Default::default(),
            ui_sessions: Default::default(),
            plain_loopback: Default::default(),
        }
    }
}

/// What a server runs with besides its state and backing.
pub(super) struct Settings {
    pub(super) idle_pass_interval: u64,
    pub(super) heartbeat_timeout: Duration,
    pub(super) cell: String,
    pub(super) snapshot_every: u64,
    pub(super) snapshot_min_interval: Duration,
    /// The record the latest snapshot holds (0: none).
    pub(super) last_snapshot: u64,
    pub(super) replay_summary: String,
    pub(super) limits: crate::state::Limits,
    /// Nodes heard from, and when.
    pub(super) last_seen: HashMap<String, Instant>,
    pub(super) sessions: crate::sessions::SessionClocks,
    pub(super) events: crate::events::EventLog,
}
