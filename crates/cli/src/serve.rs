//! `holdfast serve`: run the gateway from a config file, from quick-mode flags, or in front of
//! the built-in demo upstream. SIGHUP reloads the config atomically (an invalid one is refused
//! and the old one stays; the TLS listeners' certificate is read again); SIGTERM/SIGINT
//! drains in-flight requests and stops.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context};
use holdfast_core::config::{self, Config};
use holdfast_proxy::histograms::{BucketRecorder, Histograms};
use holdfast_proxy::plugin::PluginFactory;
use holdfast_proxy::server::{Limits, Listener};
use holdfast_proxy::{demo, health, observe::Observers, tls_listen, Gateway, State};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;
use tokio::signal::unix::{signal, SignalKind};

use crate::{plugins, reload};

/// Arguments of `holdfast serve`.
#[derive(clap::Args)]
pub struct ServeArgs {
    /// The config file (TOML). Without it, quick mode uses --listen and --upstream. The quick
    /// mode flags are refused with it: set `server.listen`, `server.admin` and
    /// `server.demo_upstream` in the file instead.
    #[arg(long, conflicts_with_all = ["upstream", "listen", "admin", "demo"])]
    pub config: Option<PathBuf>,
    /// Quick mode: the address to listen on (with --config: `server.listen` in the file).
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: String,
    /// Quick mode: an upstream target (repeat for a pool), e.g. http://127.0.0.1:9000.
    #[arg(long)]
    pub upstream: Vec<String>,
    /// Start the built-in demo upstream and route to it (quick mode without --upstream).
    #[arg(long, conflicts_with = "upstream")]
    pub demo: bool,
    /// Quick mode: the admin listener for /metrics, e.g. 127.0.0.1:9901 (with --config:
    /// `server.admin` in the file).
    #[arg(long)]
    pub admin: Option<String>,
    /// Threads serving requests (overrides `server.workers`): 0 = one per CPU, 1 = one thread.
    #[arg(long)]
    pub workers: Option<usize>,
}

fn load(args: &ServeArgs) -> anyhow::Result<Config> {
    if let Some(path) = &args.config {
        return config::load_file(path).map_err(|e| anyhow::anyhow!("{e}"));
    }
    let upstreams = if args.demo && args.upstream.is_empty() {
        vec!["http://127.0.0.1:1".to_string()]
    } else {
        args.upstream.clone()
    };
    let mut cfg = config::quick(&args.listen, &upstreams).map_err(|e| anyhow::anyhow!("{e}"))?;
    quick_admin(args, &mut cfg)?;
    Ok(cfg)
}

/// Quick mode's `--admin`, refused when it is also the client listener (`--listen`): the
/// second bind would fail after the first had started.
fn quick_admin(args: &ServeArgs, cfg: &mut Config) -> anyhow::Result<()> {
    let Some(admin) = &args.admin else {
        return Ok(());
    };
    let addr: std::net::SocketAddr = admin
        .parse()
        .with_context(|| format!("--admin `{admin}` is not HOST:PORT"))?;
    if let Some(listen) = cfg
        .server
        .listen
        .iter()
        .find(|l| config::server::same_socket(l, &addr))
    {
        let other = std::net::SocketAddr::new(addr.ip(), addr.port().wrapping_add(1).max(1));
        bail!(
            "--admin `{addr}` is also the client listener (--listen `{listen}`): the admin listener could not bind (fix: give the admin listener its own port, e.g. --admin {other})"
        );
    }
    cfg.server.admin = Some(addr);
    Ok(())
}

/// Run until SIGTERM/SIGINT.
pub fn run(args: ServeArgs) -> anyhow::Result<()> {
    let cfg = load(&args)?;
    let workers = args.workers.unwrap_or(cfg.server.workers);
    // One worker: a single-threaded runtime skips the work-stealing scheduler's bookkeeping
    // (about 15% more requests per second on one core in bench/proxy.sh).
    let runtime = if workers == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        if workers > 1 {
            b.worker_threads(workers);
        }
        b.enable_all().build()?
    };
    runtime.block_on(serve(args, cfg))
}

/// The metrics recorder: counters in the Prometheus exporter, latency histograms in fixed
/// buckets of our own (see `holdfast_proxy::histograms`); `/metrics` renders both.
struct MetricsPage {
    counters: PrometheusHandle,
    histograms: Arc<Histograms>,
}

impl MetricsPage {
    fn render(&self) -> String {
        let mut page = self.counters.render();
        page.push_str(&self.histograms.render());
        page
    }
}

fn install_metrics() -> anyhow::Result<Arc<MetricsPage>> {
    let buckets = [
        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    ];
    let exporter = PrometheusBuilder::new().build_recorder();
    let counters = exporter.handle();
    let histograms = Arc::new(Histograms::new(&buckets));
    metrics::set_global_recorder(BucketRecorder::new(exporter, histograms.clone()))
        .map_err(|e| anyhow::anyhow!("installing the metrics recorder: {e}"))?;
    Ok(Arc::new(MetricsPage {
        counters,
        histograms,
    }))
}

async fn serve(args: ServeArgs, mut cfg: Config) -> anyhow::Result<()> {
    if args.demo && args.config.is_none() && args.upstream.is_empty() {
        let addr = demo::start("127.0.0.1:0".parse()?)
            .await
            .context("starting the demo upstream")?;
        cfg = config::quick(&args.listen, &[format!("http://{addr}")])
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        quick_admin(&args, &mut cfg)?;
        eprintln!("holdfast: demo upstream on http://{addr}");
    } else if let Some(addr) = cfg.server.demo_upstream {
        let addr = demo::start(addr)
            .await
            .with_context(|| format!("starting the demo upstream on {addr}"))?;
        eprintln!("holdfast: demo upstream on http://{addr}");
    }
    // No upkeep thread: the exporter holds only counters (nothing to aggregate), and the
    // histograms count into their buckets as they record.
    let metrics = install_metrics()?;
    // Before anything binds: a certificate that does not load stops the start.
    let tls = match &cfg.server.tls {
        Some(files) => Some(tls_listen::load(files).map_err(|e| anyhow::anyhow!("{e}"))?),
        None => None,
    };
    let (extensions, admin_router) = plugins::init(&cfg).await?;
    let built = extensions
        .build(&cfg)
        .map_err(|e| anyhow::anyhow!("extensions refused the config: {e}"))?;
    let observers = Observers::new(&cfg.server.access_log)?;
    let cfg = Arc::new(cfg);
    let state = State::new(cfg.clone(), built).map_err(|e| anyhow::anyhow!("{e}"))?;
    let gateway = Arc::new(Gateway::new(state, observers));
    for up in gateway.state.load().upstreams.values() {
        health::spawn(up);
    }

    let handle = metrics.clone();
    let pools = gateway.clone();
    let mut router = axum::Router::new().route(
        "/metrics",
        // Rendering walks every series: off the serving threads.
        axum::routing::get(move || {
            let handle = handle.clone();
            let pools = pools.clone();
            async move {
                tokio::task::spawn_blocking(move || {
                    let mut page = handle.render();
                    let state = pools.state.load();
                    page.push_str(&holdfast_proxy::observe::target_health_page(
                        state
                            .upstreams
                            .iter()
                            .map(|(name, up)| (name.as_str(), &up.balancer)),
                    ));
                    page
                })
                .await
                .unwrap_or_default()
            }
        }),
    );
    if let Some(extra) = admin_router {
        router = router.merge(extra);
    }
    let mut admin = reload::AdminListener::new(router);
    if let Some(addr) = cfg.server.admin {
        let l = TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr} (server.admin)"))?;
        admin.start(addr, l)?;
    }

    let mut listeners = Vec::new();
    let plain = cfg.server.listen.iter().map(|a| (a, false));
    for (addr, over_tls) in plain.chain(cfg.server.tls_listen.iter().map(|a| (a, true))) {
        let (key, scheme) = if over_tls {
            ("server.tls_listen", "https")
        } else {
            ("server.listen", "http")
        };
        let socket = TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr} ({key})"))?;
        eprintln!("holdfast: listening on {scheme}://{}", socket.local_addr()?);
        listeners.push(Listener {
            addr: *addr,
            socket,
            tls: over_tls,
        });
    }
    let limits = limits_of(&cfg.server);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let (listener_tx, listener_rx) = tokio::sync::mpsc::unbounded_channel();
    let server = tokio::spawn(holdfast_proxy::server::serve(
        listeners,
        listener_rx,
        gateway.clone(),
        limits,
        tls,
        stop_rx,
        cfg.server.drain_timeout,
    ));

    let mut hup = signal(SignalKind::hangup())?;
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    loop {
        tokio::select! {
            _ = hup.recv() => reload::reload(&args, &gateway, &extensions, &listener_tx, &mut admin).await,
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
    }
    eprintln!(
        "holdfast: draining (up to {} ms)",
        gateway.state.load().config.server.drain_timeout.as_millis()
    );
    let _ = stop_tx.send(true);
    if server.await.is_err() {
        bail!("the server task failed while draining");
    }
    extensions.shutdown().await;
    gateway.observers.close();
    eprintln!("holdfast: stopped");
    Ok(())
}

/// The connection limits of a `[server]` section.
pub fn limits_of(server: &holdfast_core::config::ServerConfig) -> Limits {
    Limits {
        max_connections: server.max_connections,
        header_timeout: server.header_timeout,
        client_idle_timeout: server.client_idle_timeout,
        max_header_bytes: server.max_header_bytes,
        ignore_client_abort: server.ignore_client_abort,
    }
}
