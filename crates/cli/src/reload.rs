//! SIGHUP: load, validate, build and bind everything first; swap only when all of it
//! succeeded. Client listeners (`server.listen`, `server.tls_listen`) and the admin listener
//! (`server.admin`) move with the config, and so do the connection limits (for connections
//! accepted after the reload); the TLS listeners' certificate and key are read again (a
//! rotated certificate serves new handshakes; one that does not load refuses the reload);
//! `workers` needs a restart.

use std::net::SocketAddr;
use std::sync::Arc;

use holdfast_core::config;
use holdfast_core::config::AccessLog;
use holdfast_proxy::plugin::PluginFactory;
use holdfast_proxy::server::{Listener, ListenerChange};
use holdfast_proxy::{health, tls_listen, Gateway, State};
use tokio::net::TcpListener;

use crate::plugins;
use crate::serve::ServeArgs;

/// The admin listener (`/metrics` and the management API), which a reload may move.
pub struct AdminListener {
    router: axum::Router,
    /// The configured address and the handle that stops it (dropping it drains the listener).
    running: Option<(SocketAddr, tokio::sync::oneshot::Sender<()>)>,
}

impl AdminListener {
    /// Not listening yet; [`AdminListener::start`] binds it.
    pub fn new(router: axum::Router) -> AdminListener {
        AdminListener {
            router,
            running: None,
        }
    }

    /// Stop listening (connections in progress drain).
    fn stop(&mut self) {
        self.running = None;
    }

    fn configured(&self) -> Option<SocketAddr> {
        self.running.as_ref().map(|(a, _)| *a)
    }

    pub fn start(&mut self, configured: SocketAddr, l: TcpListener) -> anyhow::Result<()> {
        eprintln!("holdfast: admin on http://{}", l.local_addr()?);
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let router = self.router.clone();
        tokio::spawn(async move {
            let stopped = async {
                let _ = stop_rx.await;
            };
            if let Err(e) = axum::serve(l, router).with_graceful_shutdown(stopped).await {
                eprintln!("holdfast: admin listener stopped: {e}");
            }
        });
        self.running = Some((configured, stop_tx));
        Ok(())
    }
}

/// Listeners a reload opens before it commits: the new client addresses and the new admin
/// address. Any failure to bind refuses the reload (the old config and listeners stay).
struct NewListeners {
    client: Vec<Listener>,
    /// Client listeners to stop: the configured address, and whether it is a TLS one.
    removed: Vec<(SocketAddr, bool)>,
    /// `Some(None)`: stop the admin listener; `Some(Some(..))`: move it.
    admin: Option<Option<(SocketAddr, TcpListener)>>,
}

/// The client listeners of a `[server]`: each configured address, and whether it is TLS.
fn client_listeners(
    server: &holdfast_core::config::ServerConfig,
) -> impl Iterator<Item = (SocketAddr, bool)> + '_ {
    let plain = server.listen.iter().map(|a| (*a, false));
    plain.chain(server.tls_listen.iter().map(|a| (*a, true)))
}

async fn bind_changes(
    old: &holdfast_core::config::ServerConfig,
    new: &holdfast_core::config::ServerConfig,
    admin_now: Option<SocketAddr>,
) -> Result<NewListeners, String> {
    let before: Vec<(SocketAddr, bool)> = client_listeners(old).collect();
    let after: Vec<(SocketAddr, bool)> = client_listeners(new).collect();
    let mut client = Vec::new();
    for &(addr, tls) in after.iter().filter(|l| !before.contains(l)) {
        let (key, other) = if tls {
            ("server.tls_listen", "server.listen")
        } else {
            ("server.listen", "server.tls_listen")
        };
        let socket = TcpListener::bind(addr).await.map_err(|e| {
            if before.contains(&(addr, !tls)) && addr.port() != 0 {
                format!("cannot listen on {addr} ({key}): {e}; it is in {other} until the reload, and a listener cannot switch between plain and TLS in one reload (fix: reload once without it, then again with it in {key}, or restart)")
            } else {
                format!("cannot listen on {addr} ({key}): {e}")
            }
        })?;
        client.push(Listener { addr, socket, tls });
    }
    let removed = before
        .iter()
        .filter(|l| !after.contains(l))
        .copied()
        .collect();
    let admin = if new.admin == admin_now {
        None
    } else {
        match new.admin {
            Some(addr) => {
                let l = TcpListener::bind(addr)
                    .await
                    .map_err(|e| format!("cannot listen on {addr} (server.admin): {e}"))?;
                Some(Some((addr, l)))
            }
            None => Some(None),
        }
    };
    Ok(NewListeners {
        client,
        removed,
        admin,
    })
}

/// SIGHUP: load, validate, build and bind everything first; swap only when all of it
/// succeeded. New `server.listen` and `server.tls_listen` addresses start accepting, removed
/// ones stop (their connections carry on); `server.admin` moves; the TLS certificate is read
/// again.
pub async fn reload(
    args: &ServeArgs,
    gateway: &Arc<Gateway>,
    extensions: &plugins::Extensions,
    listener_tx: &tokio::sync::mpsc::UnboundedSender<ListenerChange>,
    admin: &mut AdminListener,
) {
    let Some(path) = &args.config else {
        eprintln!("holdfast: SIGHUP ignored: quick mode has no config file to reload");
        return;
    };
    let new = match config::load_file(path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("holdfast: reload refused, the old config stays:\n{e}");
            return;
        }
    };
    // Read again on every reload, changed paths or not: a certificate rotated in place.
    let tls = match new.server.tls.as_ref().map(tls_listen::load) {
        None => None,
        Some(Ok(acceptor)) => Some(acceptor),
        Some(Err(e)) => {
            eprintln!("holdfast: reload refused, the old config and certificate stay: {e}");
            return;
        }
    };
    let old = gateway.state.load();
    if new.server.workers != old.config.server.workers {
        eprintln!("holdfast: reload: server.workers changes on restart only");
    }
    let bound = match bind_changes(&old.config.server, &new.server, admin.configured()).await {
        Ok(b) => b,
        Err(e) => {
            eprintln!("holdfast: reload refused, the old config stays: {e}");
            return;
        }
    };
    let plugins = match extensions.build(&new) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("holdfast: reload refused by an extension, the old config stays: {e}");
            return;
        }
    };
    let new_server = new.server.clone();
    let state = match State::new(Arc::new(new), plugins) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("holdfast: reload refused, the old config stays: {e}");
            return;
        }
    };
    // Targets the checks marked down, or ejected, stay so across the reload.
    state.inherit_health(&old);
    for up in state.upstreams.values() {
        health::spawn(up);
    }
    gateway.state.store(Arc::new(state));
    // The certificate first: new TLS listeners shake hands with it from their first client.
    if let (Some(acceptor), Some(files)) = (tls, &new_server.tls) {
        eprintln!(
            "holdfast: reload: TLS certificate read from {} (for handshakes from now on)",
            files.cert_file
        );
        let _ = listener_tx.send(ListenerChange::Tls(acceptor));
    }
    for listener in bound.client {
        if let Ok(local) = listener.socket.local_addr() {
            let scheme = if listener.tls { "https" } else { "http" };
            eprintln!("holdfast: listening on {scheme}://{local}");
        }
        let _ = listener_tx.send(ListenerChange::Add(listener));
    }
    let limits = crate::serve::limits_of(&new_server);
    if limits != crate::serve::limits_of(&old.config.server) {
        eprintln!(
            "holdfast: reload: new connection limits apply to connections accepted from now on"
        );
        let _ = listener_tx.send(ListenerChange::Limits(limits));
    }
    if new_server.drain_timeout != old.config.server.drain_timeout {
        let _ = listener_tx.send(ListenerChange::Drain(new_server.drain_timeout));
    }
    if new_server.access_log != old.config.server.access_log
        || matches!(new_server.access_log, AccessLog::File(_))
    {
        // Opened again on every reload, the same path too: `mv` the log, then SIGHUP, and
        // new lines go to a new file (log rotation). `"off"` stops it, a path or `"stdout"`
        // starts it.
        match gateway.observers.reopen(&new_server.access_log) {
            Ok(()) => {}
            Err(e) => eprintln!("holdfast: reload: {e}; the access log goes on as before"),
        }
    }
    for (addr, tls) in bound.removed {
        let scheme = if tls { "https" } else { "http" };
        eprintln!("holdfast: stopped listening on {scheme}://{addr} (open connections carry on)");
        let _ = listener_tx.send(ListenerChange::Remove { addr, tls });
    }
    match bound.admin {
        Some(Some((addr, l))) => {
            admin.stop();
            if let Err(e) = admin.start(addr, l) {
                eprintln!("holdfast: reload: the admin listener did not start: {e}");
            }
        }
        Some(None) => {
            admin.stop();
            eprintln!("holdfast: admin listener stopped (server.admin removed)");
        }
        None => {}
    }
    eprintln!("holdfast: config reloaded from {}", path.display());
}
