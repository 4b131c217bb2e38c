//! TLS for the API (rustls, ring): the server's certificate chain and key from PEM files, and
//! a listener that hands the HTTP server only connections whose handshake finished. Handshakes
//! run in tasks of their own with a deadline and caps on how many are in flight, in all and from
//! one address, so a client that connects and says nothing holds one slot for ten seconds, never
//! the accept loop, and one address cannot hold them all.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::server::TlsStream;

/// Longest a client may take to finish its handshake.
const HANDSHAKE_DEADLINE: Duration = Duration::from_secs(10);

/// Most handshakes in flight at once; connections beyond wait in the kernel's backlog.
const MAX_HANDSHAKES: usize = 1024;

/// Most handshakes in flight from one address: one client that connects and says nothing
/// cannot take every slot (connections beyond are closed at once).
const MAX_HANDSHAKES_PER_PEER: u32 = 32;

/// Handshakes in flight by peer address.
type InFlight = Arc<std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, u32>>>;

/// One handshake counted against its peer until it ends.
struct PeerSlot {
    in_flight: InFlight,
    ip: std::net::IpAddr,
}

impl PeerSlot {
    /// A slot for `ip`, unless it already has its most.
    fn take(in_flight: &InFlight, ip: std::net::IpAddr) -> Option<PeerSlot> {
        let mut map = in_flight.lock().unwrap_or_else(|p| p.into_inner());
        let n = map.entry(ip).or_insert(0);
        if *n >= MAX_HANDSHAKES_PER_PEER {
            return None;
        }
        *n += 1;
        Some(PeerSlot {
            in_flight: in_flight.clone(),
            ip,
        })
    }
}

impl Drop for PeerSlot {
    fn drop(&mut self) {
        let mut map = self.in_flight.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = map.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.ip);
            }
        }
    }
}

/// Why the server's TLS settings cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file cannot be read or holds nothing usable.
    #[error("{path}: {reason}")]
    Pem {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// The key does not fit the certificate, or rustls refused them.
    #[error("TLS settings: {0}")]
    Config(String),
}

/// The TLS settings a server is served with (rustls's).
pub use rustls::ServerConfig;

/// The server's TLS settings: the certificate chain (leaf first) and its private key, both PEM.
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, TlsError> {
    let pem = |path: &Path, reason: String| TlsError::Pem {
        path: path.display().to_string(),
        reason,
    };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| pem(cert, e.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|e| pem(cert, e.to_string()))?;
    if chain.is_empty() {
        return Err(pem(cert, "no certificate in the file".into()));
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| pem(key, e.to_string()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| TlsError::Config(e.to_string()))?;
    Ok(Arc::new(config))
}

/// Accepts TCP connections and yields those that finished a TLS handshake.
pub struct TlsListener {
    ready: tokio::sync::mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
    accepting: tokio::task::JoinHandle<()>,
}

impl TlsListener {
    /// Serves TLS with `config` on `listener`.
    pub fn new(
        listener: TcpListener,
        config: Arc<rustls::ServerConfig>,
    ) -> std::io::Result<TlsListener> {
        let local = listener.local_addr()?;
        let acceptor = tokio_rustls::TlsAcceptor::from(config);
        let (tx, ready) = tokio::sync::mpsc::channel(64);
        let slots = Arc::new(tokio::sync::Semaphore::new(MAX_HANDSHAKES));
        let in_flight: InFlight = Arc::default();
        let accepting = tokio::spawn(async move {
            loop {
                let Ok(slot) = slots.clone().acquire_owned().await else {
                    return;
                };
                let (tcp, peer) = match listener.accept().await {
                    Ok(c) => c,
                    Err(e) => {
                        // Out of descriptors and the like: wait, as axum's own loop does.
                        tracing::warn!("accepting a connection: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                // Small writes (a streamed line, an answer) go out at once (see `http::serve`).
                let _ = tcp.set_nodelay(true);
                let Some(peer_slot) = PeerSlot::take(&in_flight, peer.ip()) else {
                    tracing::debug!(%peer, "too many handshakes in flight from this address");
                    continue;
                };
                let (acceptor, tx) = (acceptor.clone(), tx.clone());
                tokio::spawn(async move {
                    let shaken = tokio::time::timeout(HANDSHAKE_DEADLINE, acceptor.accept(tcp));
                    match shaken.await {
                        Ok(Ok(tls)) => {
                            drop((slot, peer_slot));
                            let _ = tx.send((tls, peer)).await;
                        }
                        Ok(Err(e)) => tracing::debug!(%peer, "TLS handshake failed: {e}"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                });
            }
        });
        Ok(TlsListener {
            ready,
            local,
            accepting,
        })
    }
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self.accepting.abort();
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(conn) => conn,
            // The accept loop ended (the runtime is going away): nothing more will come.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_address_holds_a_bounded_share_of_the_handshakes() {
        let in_flight: InFlight = Arc::default();
        let (a, b): (std::net::IpAddr, std::net::IpAddr) =
            ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let held: Vec<PeerSlot> = (0..MAX_HANDSHAKES_PER_PEER)
            .map(|_| PeerSlot::take(&in_flight, a).unwrap())
            .collect();
        assert!(PeerSlot::take(&in_flight, a).is_none());
        assert!(PeerSlot::take(&in_flight, b).is_some());
        drop(held);
        assert!(PeerSlot::take(&in_flight, a).is_some());
        assert!(in_flight.lock().unwrap().is_empty(), "slots are given back");
    }
}
