//! Service replicas' endpoints on a node: the agent gives each replica a free port (`PORT`
//! and `STARGRID_PORT` in its environment) and probes it until it is ready, through its
//! service's readiness path (an HTTP GET answered 2xx) or, without one, its port taking
//! connections. Readiness is probed every round, before and after a replica is first ready:
//! [`MAX_READINESS_FAILURES`] failures in a row and it is reported not ready (gateways take it
//! out of rotation) until a probe passes again. Each heartbeat reports the endpoint and its
//! readiness. Once ready, a replica with a liveness path is probed each round;
//! [`MAX_LIVENESS_FAILURES`] failures in a row and the agent stops it (its exit is reported,
//! and the service replaces it). A probe may be a command instead (exit 0 passes), run as the
//! replica's task runs (see `probe`). A round's probes run side by side, each within
//! [`PROBE_TIMEOUT`] all told, so a slow replica delays neither the others nor the heartbeat
//! much.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

/// Liveness probes that fail in a row before the replica is stopped.
pub(crate) const MAX_LIVENESS_FAILURES: u32 = 3;

/// Readiness probes of a ready replica that fail in a row before it is reported not ready
/// (one slow answer does not take it out of rotation).
pub(crate) const MAX_READINESS_FAILURES: u32 = 2;

/// How long one probe may take, connection and answer together.
pub(crate) const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// How a replica is probed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Probe {
    /// Its port takes connections.
    Port,
    /// `GET path` on its port answers 2xx.
    Http(String),
    /// The command exits 0 within [`PROBE_TIMEOUT`], run as the replica's task runs.
    Command(Vec<String>),
}

impl Probe {
    /// The probe an assignment's path and command give (the command over the path).
    pub(crate) fn of(path: Option<&String>, command: Option<&Vec<String>>) -> Option<Probe> {
        match (command, path) {
            (Some(c), _) => Some(Probe::Command(c.clone())),
            (None, Some(p)) => Some(Probe::Http(p.clone())),
            (None, None) => None,
        }
    }
}

/// Runs a command probe for a replica: whether it passed.
pub(crate) type CommandRunner<'a> = dyn Fn(&[String]) -> bool + Sync + 'a;

/// One replica's endpoint on this node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Endpoint {
    /// The port the replica was given.
    pub(crate) port: u16,
    /// Its service's readiness probe.
    pub(crate) ready_probe: Probe,
    /// Its last probes passed (see [`MAX_READINESS_FAILURES`]).
    pub(crate) ready: bool,
    /// Readiness probes failed in a row while it was ready.
    pub(crate) not_ready: u32,
    /// It was ready once: its liveness is probed from then on.
    pub(crate) has_been_ready: bool,
    /// Its service's liveness probe, if any.
    pub(crate) live_probe: Option<Probe>,
    /// Liveness probes failed in a row.
    pub(crate) failures: u32,
    /// What command probes run as: the replica's task (`None`: it has none).
    pub(crate) probe_as: Option<Box<wire::api::Assignment>>,
}

/// A port no process on this host listens on now (the kernel's choice; the replica binds it
/// next).
pub(crate) fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
        .local_addr()?
        .port())
}

/// Whether nothing on this host listens on `port` now (the task given it binds it next).
pub(crate) fn port_is_free(port: u16) -> bool {
    TcpListener::bind((Ipv4Addr::UNSPECIFIED, port)).is_ok()
}

impl Endpoint {
    /// Runs one probe of this replica.
    fn passes(&self, p: &Probe, run: &CommandRunner<'_>) -> bool {
        match p {
            Probe::Port => probe(self.port, None),
            Probe::Http(path) => probe(self.port, Some(path)),
            Probe::Command(c) => run(c),
        }
    }

    /// Probes the replica's readiness once; whether it is ready now.
    pub(crate) fn probe(&mut self, run: &CommandRunner<'_>) -> bool {
        if self.passes(&self.ready_probe, run) {
            self.ready = true;
            self.not_ready = 0;
        } else if self.ready {
            self.not_ready += 1;
            if self.not_ready >= MAX_READINESS_FAILURES {
                self.ready = false;
                self.not_ready = 0;
            }
        }
        self.ready
    }

    /// One round's probes: readiness, then liveness once it has been ready (a replica that
    /// stops answering is out of rotation first, then stopped).
    pub(crate) fn check(&mut self, run: &CommandRunner<'_>) {
        self.probe(run);
        self.has_been_ready |= self.ready;
        if let (true, Some(live)) = (self.has_been_ready, &self.live_probe) {
            if self.passes(live, run) {
                self.failures = 0;
            } else {
                self.failures += 1;
            }
        }
    }

    /// Whether its liveness probe failed [`MAX_LIVENESS_FAILURES`] times in a row.
    pub(crate) fn dead(&self) -> bool {
        self.failures >= MAX_LIVENESS_FAILURES
    }
}

/// Whether the replica on `port` answers: a 2xx to `GET path`, or a connection without a path.
fn probe(port: u16, path: Option<&str>) -> bool {
    let deadline = std::time::Instant::now() + PROBE_TIMEOUT;
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, PROBE_TIMEOUT) else {
        return false;
    };
    let Some(path) = path else {
        return true;
    };
    let left = || deadline.saturating_duration_since(std::time::Instant::now());
    let _ = stream.set_write_timeout(Some(left().max(Duration::from_millis(1))));
    let ask = format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n");
    if stream.write_all(ask.as_bytes()).is_err() {
        return false;
    }
    // The status line is all it takes: "HTTP/1.x 2xx".
    let mut head = [0u8; 16];
    let mut got = 0;
    while got < head.len() {
        // The whole answer within the deadline, however slowly its bytes trickle.
        if left().is_zero() || stream.set_read_timeout(Some(left())).is_err() {
            break;
        }
        match stream.read(&mut head[got..]) {
            Ok(0) | Err(_) => break,
            Ok(n) => got += n,
        }
    }
    let line = String::from_utf8_lossy(&head[..got]);
    line.starts_with("HTTP/1.") && line.as_bytes().get(9) == Some(&b'2')
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A one-shot HTTP server answering `status` on a free port.
    fn serve(status: &'static str) -> u16 {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            for s in listener.incoming().take(8) {
                let mut s = s.unwrap();
                let mut buf = [0u8; 512];
                let _ = s.read(&mut buf);
                let _ = s.write_all(format!("HTTP/1.0 {status}\r\n\r\n").as_bytes());
            }
        });
        port
    }

    fn no_command(_: &[String]) -> bool {
        unreachable!("no command probe here")
    }

    #[test]
    fn a_command_probe_passes_on_exit_0_as_the_runner_says() {
        let mut e = Endpoint {
            port: 1,
            ready_probe: Probe::Command(vec!["ready".into()]),
            ready: false,
            not_ready: 0,
            has_been_ready: false,
            live_probe: Some(Probe::Command(vec!["alive".into()])),
            failures: 0,
            probe_as: None,
        };
        let runs = std::sync::Mutex::new(Vec::new());
        let run = |c: &[String]| {
            runs.lock().unwrap().push(c[0].clone());
            c[0] == "ready"
        };
        e.check(&run);
        assert!(e.ready && e.has_been_ready);
        e.check(&run);
        e.check(&run);
        assert!(e.dead());
        assert_eq!(runs.lock().unwrap().len(), 6);
        assert_eq!(
            Probe::of(Some(&"/r".into()), Some(&vec!["c".into()])),
            Some(Probe::Command(vec!["c".into()]))
        );
    }

    #[test]
    fn a_replica_is_ready_once_its_path_answers_2xx_or_its_port_takes_connections() {
        let ok = serve("200 OK");
        assert!(probe(ok, Some("/ready")));
        assert!(probe(ok, None));
        let starting = serve("503 Service Unavailable");
        assert!(!probe(starting, Some("/ready")));
        // Nothing listens on a port just freed.
        let closed = free_port().unwrap();
        assert!(!probe(closed, None));
        let mut e = Endpoint {
            port: ok,
            ready_probe: Probe::Http("/".into()),
            ready: false,
            not_ready: 0,
            has_been_ready: false,
            live_probe: None,
            failures: 0,
            probe_as: None,
        };
        assert!(e.probe(&no_command));
        assert!(e.ready);
        // A ready replica that stops answering leaves rotation after two failed probes, and
        // comes back with the next probe that passes.
        let mut e = Endpoint {
            port: closed,
            ready_probe: Probe::Port,
            ready: true,
            not_ready: 0,
            has_been_ready: false,
            live_probe: None,
            failures: 0,
            probe_as: None,
        };
        assert!(e.probe(&no_command), "one failed probe is not enough");
        assert!(!e.probe(&no_command));
        e.port = ok;
        assert!(e.probe(&no_command));
        // Alive while its liveness path answers; dead after three failures in a row.
        let mut e = Endpoint {
            port: closed,
            ready_probe: Probe::Port,
            ready: true,
            not_ready: 0,
            has_been_ready: false,
            live_probe: Some(Probe::Http("/alive".into())),
            failures: 0,
            probe_as: None,
        };
        e.check(&no_command);
        e.check(&no_command);
        assert!(!e.dead());
        e.check(&no_command);
        assert!(e.dead());
    }
}
