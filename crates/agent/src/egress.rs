//! An interactive sandbox's one way out: an HTTP `CONNECT` proxy the agent runs for each
//! sandbox that has an egress allow-list ([`wire::api::EgressRule`]). The sandbox has no
//! network but loopback (its own network namespace); the proxy's listening socket is made
//! inside that namespace, at `127.0.0.1:3128`, by a short-lived thread that joins it, while the
//! agent accepts on it and dials out from the host's namespace. So the sandbox's programs reach
//! exactly the listed hosts and ports (`HTTPS_PROXY` points them at the proxy) and nothing else.
//!
//! A destination must match a rule by name (or address) and port, and the address dialled
//! must be public: loopback, private, link-local (cloud metadata), shared, multicast and
//! reserved addresses, IPv6 outside global unicast or embedding IPv4 (6to4, Teredo), and
//! Azure's host endpoint are refused unless the operator lets sandboxes reach a network
//! (`--egress-allow-net CIDR`); the node's own addresses and the control plane's are refused
//! always ([`Scope`]). So a rule naming a host that resolves to the node, the control plane or
//! a metadata service gets nothing. Names are resolved as absolute (no search domains).
//! Connections are counted from their accept, 64 per sandbox and 4,096 per agent; a request
//! head is at most 8 KiB and must be complete within 10 s. The proxy and every connection
//! through it end with the sandbox's task.

use ipnet::{IpNet, Ipv6Net};
use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use wire::api::{EgressRule, HostPattern};

/// Where a sandbox's programs find the proxy.
pub const PROXY_PORT: u16 = 3128;

/// The most connections open through one sandbox's proxy.
const MAX_PER_SANDBOX: usize = 64;
/// The most connections open through all of an agent's proxies.
const MAX_PER_AGENT: usize = 4096;
/// The longest request head.
const HEAD_LIMIT: usize = 8 << 10;
/// How long a client has to send its request, and a destination to answer.
const PATIENCE: Duration = Duration::from_secs(10);
/// Each connection thread's stack (it resolves names, which can go through NSS modules).
const STACK: usize = 256 << 10;

static OPEN_ON_AGENT: AtomicUsize = AtomicUsize::new(0);

/// What every sandbox of an agent may reach at most, whatever its rules say.
#[derive(Clone, Debug, Default)]
pub struct Scope {
    /// Networks that are not public but that the operator lets sandboxes reach.
    pub allowed_nets: Vec<IpNet>,
    /// Addresses never reached: the node's own (but loopback, which only an allowed network
    /// opens).
    pub node: Vec<IpAddr>,
    /// The control plane's addresses and port, never reached.
    pub control_plane: Vec<SocketAddr>,
}

impl Scope {
    /// The operator's networks, with the node's own addresses and the control plane at
    /// `server_url` denied.
    pub fn for_node(allowed_nets: Vec<IpNet>, server_url: &str) -> Scope {
        let mut node: Vec<IpAddr> = nix::ifaddrs::getifaddrs()
            .map(|addrs| {
                addrs
                    .filter_map(|a| a.address)
                    .filter_map(|a| match (a.as_sockaddr_in(), a.as_sockaddr_in6()) {
                        (Some(v4), _) => Some(IpAddr::V4(v4.ip())),
                        (_, Some(v6)) => Some(IpAddr::V6(v6.ip())),
                        _ => None,
                    })
                    .map(canonical)
                    .filter(|ip| !ip.is_loopback())
                    .collect()
            })
            .unwrap_or_default();
        node.sort_unstable();
        node.dedup();
        let authority = server_url
            .split_once("://")
            .map_or(server_url, |(_, rest)| rest)
            .split('/')
            .next()
            .unwrap_or("");
        let with_port = match authority.rsplit_once(':') {
            Some((_, p)) if p.parse::<u16>().is_ok() => authority.to_string(),
            _ => format!("{authority}:443"),
        };
        let control_plane = with_port
            .to_socket_addrs()
            .map(|addrs| {
                addrs
                    .map(|a| SocketAddr::new(canonical(a.ip()), a.port()))
                    .collect()
            })
            .unwrap_or_default();
        Scope {
            allowed_nets,
            node,
            control_plane,
        }
    }

    /// Whether a connection to `to` may be made.
    fn may_reach(&self, to: SocketAddr) -> bool {
        let ip = canonical(to.ip());
        !self.node.contains(&ip)
            && !self.control_plane.contains(&SocketAddr::new(ip, to.port()))
            && (is_public(ip) || self.allowed_nets.iter().any(|n| n.contains(&ip)))
    }
}

/// An IPv4-mapped IPv6 address as its IPv4 address.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(a) => a.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// What a sandbox may reach.
#[derive(Clone, Debug)]
pub struct Policy {
    rules: Vec<EgressRule>,
    scope: Arc<Scope>,
}

impl Policy {
    /// The policy of rules `texts` (as the server sends them), within the agent's scope.
    pub fn new(texts: &[String], scope: Arc<Scope>) -> Result<Policy, String> {
        let rules = texts
            .iter()
            .map(|t| EgressRule::parse(t).map_err(|e| format!("egress rule '{t}': {e}")))
            .collect::<Result<_, _>>()?;
        Ok(Policy { rules, scope })
    }

    /// Whether some rule allows `host` (a name or an address) on `port`.
    fn allows(&self, host: &str, port: u16) -> bool {
        self.rules.iter().any(|r| r.allows(host, port))
    }

    /// Whether a connection to `to` may be made.
    fn may_reach(&self, to: SocketAddr) -> bool {
        self.scope.may_reach(to)
    }
}

/// Azure's host endpoint (WireServer), reachable from every VM and not meant for tenants.
const AZURE_WIRESERVER: [u8; 4] = [168, 63, 129, 16];

/// Whether `ip` is an address on the public internet: IPv4 that is not loopback, private,
/// link-local, shared, multicast, documentation, benchmarking, reserved or Azure's host
/// endpoint; IPv6 in global unicast (`2000::/3`) but not documentation, 6to4, Teredo or
/// ORCHID (which embed or stand for other addresses). IPv4-mapped IPv6 is judged as IPv4.
pub fn is_public(ip: IpAddr) -> bool {
    match canonical(ip) {
        IpAddr::V4(a) => {
            let [x, y, z, _] = a.octets();
            !(a.is_unspecified()
                || a.is_loopback()
                || a.is_private()
                || a.is_link_local()
                || a.is_broadcast()
                || a.is_multicast()
                || a.is_documentation()
                || x == 0
                || (x == 100 && (64..128).contains(&y))
                || (x == 192 && y == 0 && z == 0)
                || (x == 198 && (18..20).contains(&y))
                || x >= 240
                || a.octets() == AZURE_WIRESERVER)
        }
        IpAddr::V6(a) => {
            let within = |net: &str| net.parse::<Ipv6Net>().is_ok_and(|n| n.contains(&a));
            within("2000::/3")
                && ![
                    "2001:db8::/32",
                    "2002::/16",
                    "2001::/32",
                    "2001:10::/28",
                    "2001:20::/28",
                ]
                .iter()
                .any(|n| within(n))
        }
    }
}

/// A sandbox's running proxy; dropping it closes the listener and every connection.
pub struct Proxy {
    shared: Arc<Shared>,
}

struct Shared {
    listener: TcpListener,
    policy: Policy,
    closed: AtomicBool,
    /// Open connections (their streams), to close with the sandbox.
    open: Mutex<HashMap<u64, Vec<TcpStream>>>,
    next: AtomicU64,
}

impl Proxy {
    /// The proxy of the sandbox whose outermost process is `pid` (its network namespace is
    /// that of `pid`'s first child in another namespace than the agent's).
    pub fn open_for(pid: u32, policy: Policy) -> Result<Proxy, String> {
        let netns = namespace_of_child(pid)?;
        let listener = std::thread::spawn(move || -> Result<TcpListener, String> {
            // Only this thread joins the namespace, and it ends here.
            nix::sched::setns(&netns, nix::sched::CloneFlags::CLONE_NEWNET)
                .map_err(|e| format!("joining the sandbox's network: {e}"))?;
            // The namespace is made before its loopback is up (bubblewrap brings it up in the
            // sandbox): until then 127.0.0.1 is no address of it.
            let deadline = Instant::now() + Duration::from_secs(2);
            loop {
                match TcpListener::bind((Ipv4Addr::LOCALHOST, PROXY_PORT)) {
                    Ok(l) => return Ok(l),
                    Err(e)
                        if e.kind() == std::io::ErrorKind::AddrNotAvailable
                            && Instant::now() < deadline =>
                    {
                        std::thread::sleep(Duration::from_millis(1));
                    }
                    Err(e) => return Err(format!("the egress proxy's socket: {e}")),
                }
            }
        })
        .join()
        .map_err(|_| "the egress proxy's thread panicked".to_string())??;
        Proxy::serve(listener, policy)
    }

    /// A proxy accepting on `listener`.
    pub fn serve(listener: TcpListener, policy: Policy) -> Result<Proxy, String> {
        let shared = Arc::new(Shared {
            listener,
            policy,
            closed: AtomicBool::new(false),
            open: Mutex::new(HashMap::new()),
            next: AtomicU64::new(0),
        });
        let accepting = shared.clone();
        std::thread::Builder::new()
            .name("egress".into())
            .stack_size(STACK)
            .spawn(move || accept_loop(&accepting))
            .map_err(|e| format!("the egress proxy's thread: {e}"))?;
        Ok(Proxy { shared })
    }

    /// Where it listens.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.shared.listener.local_addr()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.shared.closed.store(true, Ordering::SeqCst);
        // Wakes the accepting thread (its accept fails from now on).
        let _ = nix::sys::socket::shutdown(
            self.shared.listener.as_raw_fd(),
            nix::sys::socket::Shutdown::Both,
        );
        for stream in lock(&self.shared.open).values().flatten() {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The network namespace of `pid`'s first child that is in another one than ours, waited for
/// up to 2 s (the sandbox is being made).
fn namespace_of_child(pid: u32) -> Result<std::fs::File, String> {
    let ours = std::fs::metadata("/proc/self/ns/net")
        .map_err(|e| format!("/proc/self/ns/net: {e}"))?
        .ino();
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        // Read again each round: the sandbox's first process may not be forked yet.
        let children =
            std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
        for child in children.split_whitespace() {
            let path = format!("/proc/{child}/ns/net");
            if let Ok(file) = std::fs::File::open(&path) {
                if file.metadata().is_ok_and(|m| m.ino() != ours) {
                    return Ok(file);
                }
            }
        }
        // A sandbox that already ended will not make one.
        let ended = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|stat| {
                stat.rsplit_once(')')
                    .map(|(_, rest)| rest.trim_start().starts_with(['Z', 'X']))
            })
            .unwrap_or(false);
        if ended || Instant::now() >= deadline {
            return Err(format!(
                "the sandbox's network namespace was not found (process {pid} {})",
                if ended { "ended" } else { "made none in 2 s" }
            ));
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn accept_loop(shared: &Arc<Shared>) {
    loop {
        let (client, _) = match shared.listener.accept() {
            Ok(c) => c,
            Err(_) if shared.closed.load(Ordering::SeqCst) => return,
            Err(_) => {
                // Out of descriptors, say: wait a little rather than spin.
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
        };
        if shared.closed.load(Ordering::SeqCst) {
            return;
        }
        let Some(slot) = Slot::take(shared, &client) else {
            refuse(
                client,
                "503 Service Unavailable",
                "too many open connections",
            );
            continue;
        };
        let _ = std::thread::Builder::new()
            .name("egress-conn".into())
            .stack_size(STACK)
            .spawn(move || serve_one(slot, client));
    }
}

/// One connection's place among its sandbox's and its agent's, from its accept until it ends
/// (its streams are closed with the proxy).
struct Slot {
    shared: Arc<Shared>,
    id: u64,
}

impl Slot {
    /// A place for `client`, if its sandbox and its agent have one.
    fn take(shared: &Arc<Shared>, client: &TcpStream) -> Option<Slot> {
        let mut open = lock(&shared.open);
        if open.len() >= MAX_PER_SANDBOX {
            return None;
        }
        OPEN_ON_AGENT
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < MAX_PER_AGENT).then_some(n + 1)
            })
            .ok()?;
        let id = shared.next.fetch_add(1, Ordering::SeqCst);
        open.insert(id, client.try_clone().into_iter().collect());
        Some(Slot {
            shared: shared.clone(),
            id,
        })
    }

    /// Adds `stream` to what the proxy closes (at once, if it is closed already).
    fn hold(&self, stream: &TcpStream) {
        if let (Some(held), Ok(s)) = (
            lock(&self.shared.open).get_mut(&self.id),
            stream.try_clone(),
        ) {
            held.push(s);
        }
        if self.shared.closed.load(Ordering::SeqCst) {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        lock(&self.shared.open).remove(&self.id);
        OPEN_ON_AGENT.fetch_sub(1, Ordering::SeqCst);
    }
}

fn refuse(mut client: TcpStream, status: &str, why: &str) {
    let body = format!("stargrid egress: {why}\n");
    let _ = write!(
        client,
        "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: \
         close\r\n\r\n{body}",
        body.len()
    );
}

/// A parsed `CONNECT host:port` request, or the refusal to answer.
#[derive(Debug, PartialEq, Eq)]
struct Connect {
    host: String,
    port: u16,
}

/// Reads the request head (up to the empty line): what it asks for, and the bytes that came
/// after the head.
fn read_head(client: &mut TcpStream) -> Result<(Connect, Vec<u8>), (&'static str, String)> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    let deadline = Instant::now() + PATIENCE;
    let end = loop {
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        if buf.len() > HEAD_LIMIT {
            return Err((
                "431 Request Header Fields Too Large",
                "head over 8 KiB".into(),
            ));
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || client.set_read_timeout(Some(left)).is_err() {
            return Err(("408 Request Timeout", "the request took over 10 s".into()));
        }
        match client.read(&mut chunk) {
            Ok(0) => return Err(("400 Bad Request", "the request ended early".into())),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) => return Err(("408 Request Timeout", e.to_string())),
        }
    };
    let connect = parse_request_line(&buf[..end])?;
    Ok((connect, buf[end..].to_vec()))
}

fn parse_request_line(head: &[u8]) -> Result<Connect, (&'static str, String)> {
    let bad = |why: String| ("400 Bad Request", why);
    let line = head
        .split(|&b| b == b'\n')
        .next()
        .and_then(|l| std::str::from_utf8(l).ok())
        .map(|l| l.trim_end_matches('\r'))
        .ok_or_else(|| bad("the request line is not text".into()))?;
    let mut words = line.split(' ');
    let (method, target, version) = (words.next(), words.next(), words.next());
    if method != Some("CONNECT") {
        return Err((
            "405 Method Not Allowed",
            "only CONNECT (https, or a client's proxy tunnel) goes out".into(),
        ));
    }
    if !version.is_some_and(|v| v.starts_with("HTTP/1.")) || words.next().is_some() {
        return Err(bad("expected 'CONNECT host:port HTTP/1.1'".into()));
    }
    let target = target.unwrap_or("");
    let has_port = match target.starts_with('[') {
        true => target.contains("]:"),
        false => target.matches(':').count() == 1,
    };
    if !has_port {
        return Err(bad(format!("'{target}' has no port")));
    }
    let rule = EgressRule::parse(target).map_err(|e| bad(format!("'{target}': {e}")))?;
    let host = match &rule.host {
        HostPattern::Below(_) => return Err(bad(format!("'{target}' is not a host"))),
        HostPattern::Name(n) => n.clone(),
        HostPattern::Ip(ip) => ip.to_string(),
    };
    Ok(Connect {
        host,
        port: rule.port,
    })
}

fn serve_one(slot: Slot, mut client: TcpStream) {
    let policy = &slot.shared.policy;
    let (connect, early) = match read_head(&mut client) {
        Ok(c) => c,
        Err((status, why)) => return refuse(client, status, &why),
    };
    if !policy.allows(&connect.host, connect.port) {
        return refuse(
            client,
            "403 Forbidden",
            &format!(
                "{}:{} is not in this sandbox's allow-list",
                connect.host, connect.port
            ),
        );
    }
    // A name is resolved as absolute: no search domain turns it into an internal one.
    let absolute = match connect.host.parse::<IpAddr>() {
        Ok(_) => connect.host.clone(),
        Err(_) => format!("{}.", connect.host),
    };
    let addrs: Vec<SocketAddr> = match (absolute.as_str(), connect.port).to_socket_addrs() {
        Ok(a) => a.collect(),
        Err(e) => return refuse(client, "502 Bad Gateway", &format!("{}: {e}", connect.host)),
    };
    let reachable: Vec<SocketAddr> = addrs
        .iter()
        .copied()
        .filter(|a| policy.may_reach(*a))
        .collect();
    if reachable.is_empty() {
        return refuse(
            client,
            "403 Forbidden",
            &format!(
                "{} resolves to no address sandboxes may reach ({} found)",
                connect.host,
                addrs.len()
            ),
        );
    }
    let Some(upstream) = reachable
        .iter()
        .take(4)
        .find_map(|a| TcpStream::connect_timeout(a, PATIENCE).ok())
    else {
        return refuse(
            client,
            "502 Bad Gateway",
            &format!("{}:{} did not answer", connect.host, connect.port),
        );
    };
    slot.hold(&upstream);
    let _ = client.set_read_timeout(None);
    let _ = upstream.set_nodelay(true);
    let (Ok(client_r), Ok(mut upstream_w)) = (client.try_clone(), upstream.try_clone()) else {
        return;
    };
    if client
        .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
        .is_err()
        || (!early.is_empty() && upstream_w.write_all(&early).is_err())
    {
        return;
    }
    // Sandbox → destination on a thread of its own; destination → sandbox here.
    match std::thread::Builder::new()
        .stack_size(STACK)
        .spawn(move || copy_then_close(client_r, upstream_w))
    {
        Ok(outbound) => {
            copy_then_close(upstream, client);
            let _ = outbound.join();
        }
        Err(_) => {
            let _ = client.shutdown(Shutdown::Both);
            let _ = upstream.shutdown(Shutdown::Both);
        }
    }
}

/// Copies until either side ends, then ends both directions of both.
fn copy_then_close(mut from: TcpStream, mut to: TcpStream) {
    let _ = std::io::copy(&mut from, &mut to);
    let _ = to.shutdown(Shutdown::Both);
    let _ = from.shutdown(Shutdown::Both);
}

/// Interactive sandbox `task` with its egress proxy for `rules` started. A sandbox whose proxy
/// cannot start is stopped and reported failed, and so is one without an isolation layer (it
/// would have the host's whole network, not its allow-list).
pub(crate) fn with_proxy(
    config: &crate::AgentConfig,
    node: &str,
    mut task: crate::task::Task,
    rules: &[String],
) -> crate::task::Task {
    let crate::task::Running::Process { child, .. } = &task.running else {
        return task;
    };
    if task.exit_code.is_some() {
        return task;
    }
    let started = match config.isolation {
        crate::isolation::Isolation::None => {
            Err("an allow-list needs an isolation layer; this agent \
                                            runs none"
                .to_string())
        }
        crate::isolation::Isolation::Bubblewrap { .. } => Policy::new(rules, config.egress.clone())
            .and_then(|policy| Proxy::open_for(child.id(), policy)),
    };
    match started {
        Ok(proxy) => task.egress = Some(proxy),
        Err(why) => {
            tracing::warn!(%node, "a sandbox's egress proxy did not start: {why}");
            while !crate::task::stop(&mut task, Duration::ZERO) {}
            task.exit_code = Some(127);
            // Its execs hear that it is not running.
            task.exec_target = None;
        }
    }
    task
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use proptest::prelude::*;
    use std::io::BufRead;

    #[test]
    fn only_public_addresses_are_reachable_unless_the_operator_says_so() {
        for private in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "224.0.0.1",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
        ] {
            assert!(!is_public(private.parse().unwrap()), "{private}");
        }
        for public in ["1.1.1.1", "151.101.0.223", "2606:4700::1111"] {
            assert!(is_public(public.parse().unwrap()), "{public}");
        }
        for public in ["192.0.78.9", "2a00:1450::1"] {
            assert!(is_public(public.parse().unwrap()), "{public}");
        }
        for special in [
            "168.63.129.16",
            "192.0.0.8",
            "::10.0.0.1",
            "2002:a00:1::1",
            "2001:0:a00:1::1",
            "fec0::1",
            "64:ff9b::a00:1",
        ] {
            assert!(!is_public(special.parse().unwrap()), "{special}");
        }
        let scope = Scope {
            allowed_nets: vec!["10.0.0.0/8".parse().unwrap()],
            node: vec!["10.0.0.5".parse().unwrap()],
            control_plane: vec!["10.0.0.9:7070".parse().unwrap()],
        };
        let p = Policy::new(&[], Arc::new(scope)).unwrap();
        assert!(p.may_reach("10.9.9.9:443".parse().unwrap()));
        assert!(!p.may_reach("127.0.0.1:443".parse().unwrap()));
        // The node itself and the control plane stay out of reach inside an allowed network.
        assert!(!p.may_reach("10.0.0.5:443".parse().unwrap()));
        assert!(!p.may_reach("[::ffff:10.0.0.5]:443".parse().unwrap()));
        assert!(!p.may_reach("10.0.0.9:7070".parse().unwrap()));
        assert!(p.may_reach("10.0.0.9:443".parse().unwrap()));
        let here = Scope::for_node(Vec::new(), "http://127.0.0.1:7070/");
        assert_eq!(here.control_plane, vec!["127.0.0.1:7070".parse().unwrap()]);
        assert!(here.node.iter().all(|ip| !ip.is_loopback()));
    }

    #[test]
    fn a_request_line_is_a_connect_to_a_host_and_port() {
        let ok = parse_request_line(b"CONNECT PyPI.org:443 HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        assert_eq!(
            ok,
            Connect {
                host: "pypi.org".into(),
                port: 443
            }
        );
        let v6 = parse_request_line(b"CONNECT [2001:db8::1]:8443 HTTP/1.1\r\n\r\n").unwrap();
        assert_eq!((v6.host.as_str(), v6.port), ("2001:db8::1", 8443));
        for (line, status) in [
            (&b"GET http://x/ HTTP/1.1\r\n\r\n"[..], "405"),
            (b"CONNECT pypi.org HTTP/1.1\r\n\r\n", "400"),
            (b"CONNECT *.x.com:443 HTTP/1.1\r\n\r\n", "400"),
            (b"CONNECT a:1 SMTP\r\n\r\n", "400"),
            (b"CONNECT a:1 HTTP/1.1 x\r\n\r\n", "400"),
            (b"\xff\xfe\r\n\r\n", "400"),
        ] {
            let (got, _) = parse_request_line(line).unwrap_err();
            assert!(got.starts_with(status), "{line:?}: {got}");
        }
    }

    /// A server on loopback that answers each line with `pong: LINE`.
    fn echo() -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let at = l.local_addr().unwrap();
        std::thread::spawn(move || {
            for s in l.incoming().flatten() {
                std::thread::spawn(move || {
                    let mut w = s.try_clone().unwrap();
                    for line in std::io::BufReader::new(s).lines().map_while(Result::ok) {
                        let _ = writeln!(w, "pong: {line}");
                    }
                });
            }
        });
        at
    }

    /// The proxy's status line for a `CONNECT` to `target` ("reset" when it closed the
    /// connection before the answer could be read), and the tunnel when it is one.
    fn ask(proxy: SocketAddr, target: &str) -> (String, Option<TcpStream>) {
        let mut s = TcpStream::connect(proxy).unwrap();
        let _ = write!(s, "CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n");
        let mut r = std::io::BufReader::new(s.try_clone().unwrap());
        let mut status = String::new();
        if r.read_line(&mut status).is_err() {
            return ("reset".into(), None);
        }
        let ok = status.contains(" 200 ");
        if ok {
            let mut blank = String::new();
            r.read_line(&mut blank).unwrap();
        }
        (status, ok.then_some(s))
    }

    #[test]
    fn the_proxy_tunnels_to_what_is_allowed_and_refuses_the_rest() {
        let target = echo();
        let nets = Arc::new(Scope {
            allowed_nets: vec!["127.0.0.1/32".parse().unwrap()],
            ..Scope::default()
        });
        let rules = vec![format!("127.0.0.1:{}", target.port())];
        let proxy = Proxy::serve(
            TcpListener::bind("127.0.0.1:0").unwrap(),
            Policy::new(&rules, nets).unwrap(),
        )
        .unwrap();
        let at = proxy.local_addr().unwrap();
        let (status, tunnel) = ask(at, &format!("127.0.0.1:{}", target.port()));
        let mut tunnel = tunnel.unwrap_or_else(|| panic!("{status}"));
        writeln!(tunnel, "ping").unwrap();
        let mut reply = String::new();
        std::io::BufReader::new(tunnel.try_clone().unwrap())
            .read_line(&mut reply)
            .unwrap();
        assert_eq!(reply, "pong: ping\n");
        // Another port of the same host, and a name not listed, are refused.
        let (status, _) = ask(at, &format!("127.0.0.1:{}", target.port() + 1));
        assert!(status.contains(" 403 "), "{status}");
        let (status, _) = ask(at, "example.com:443");
        assert!(status.contains(" 403 "), "{status}");
        // A listed address that is not public is refused without the operator's network.
        let strict = Proxy::serve(
            TcpListener::bind("127.0.0.1:0").unwrap(),
            Policy::new(&rules, Arc::new(Scope::default())).unwrap(),
        )
        .unwrap();
        let (status, _) = ask(
            strict.local_addr().unwrap(),
            &format!("127.0.0.1:{}", target.port()),
        );
        assert!(status.contains(" 403 "), "{status}");
        // Connections count from their accept: past 64 that have not even sent a request,
        // the next is turned away (the tunnel above is one of the 64).
        let idle: Vec<TcpStream> = (0..MAX_PER_SANDBOX - 1)
            .map(|_| TcpStream::connect(at).unwrap())
            .collect();
        let deadline = Instant::now() + Duration::from_secs(5);
        let status = loop {
            let (status, _) = ask(at, &format!("127.0.0.1:{}", target.port()));
            // A refusal at the accept can reach the client as a reset (it was not read).
            if status.contains(" 503 ") || status == "reset" || Instant::now() > deadline {
                break status;
            }
        };
        assert!(status.contains(" 503 ") || status == "reset", "{status}");
        drop(idle);
        // Dropping the proxy ends its tunnels and its listener.
        drop(proxy);
        let mut rest = String::new();
        let n = std::io::BufReader::new(tunnel.try_clone().unwrap())
            .read_line(&mut rest)
            .unwrap_or(0);
        assert_eq!(n, 0, "{rest}");
        let refused = TcpStream::connect(at)
            .map(|mut s| {
                let _ = write!(s, "CONNECT 127.0.0.1:1 HTTP/1.1\r\n\r\n");
                let mut got = String::new();
                std::io::BufReader::new(s).read_line(&mut got).unwrap_or(0) == 0
            })
            .unwrap_or(true);
        assert!(refused, "the proxy still answers after it was dropped");
    }

    proptest! {
        #[test]
        fn any_request_head_is_answered_or_refused_without_a_panic(head in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = parse_request_line(&head);
        }
    }
}
