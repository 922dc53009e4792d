//! SIGHUP: load, validate, build and bind everything first; swap only when all of it
//! succeeded. Client listeners (`server.listen`) and the admin listener (`server.admin`) move
//! with the config, and so do the connection limits (for connections accepted after the
//! reload); `workers` needs a restart.

use std::net::SocketAddr;
use std::sync::Arc;

use holdfast_core::config;
use holdfast_proxy::plugin::PluginFactory;
use holdfast_proxy::server::ListenerChange;
use holdfast_proxy::{health, Gateway, State};
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
    client: Vec<(SocketAddr, TcpListener)>,
    removed: Vec<SocketAddr>,
    /// `Some(None)`: stop the admin listener; `Some(Some(..))`: move it.
    admin: Option<Option<(SocketAddr, TcpListener)>>,
}

async fn bind_changes(
    old: &holdfast_core::config::ServerConfig,
    new: &holdfast_core::config::ServerConfig,
    admin_now: Option<SocketAddr>,
) -> Result<NewListeners, String> {
    let mut client = Vec::new();
    for addr in new.listen.iter().filter(|a| !old.listen.contains(a)) {
        let l = TcpListener::bind(addr)
            .await
            .map_err(|e| format!("cannot listen on {addr} (server.listen): {e}"))?;
        client.push((*addr, l));
    }
    let removed = old
        .listen
        .iter()
        .filter(|a| !new.listen.contains(a))
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
/// succeeded. New `server.listen` addresses start accepting, removed ones stop (their
/// connections carry on); `server.admin` moves.
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
    for (addr, l) in bound.client {
        if let Ok(local) = l.local_addr() {
            eprintln!("holdfast: listening on http://{local}");
        }
        let _ = listener_tx.send(ListenerChange::Add(addr, l));
    }
    let limits = crate::serve::limits_of(&new_server);
    if limits != crate::serve::limits_of(&old.config.server) {
        eprintln!(
            "holdfast: reload: new connection limits apply to connections accepted from now on"
        );
        let _ = listener_tx.send(ListenerChange::Limits(limits));
    }
    for addr in bound.removed {
        eprintln!("holdfast: stopped listening on {addr} (open connections carry on)");
        let _ = listener_tx.send(ListenerChange::Remove(addr));
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
