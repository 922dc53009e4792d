//! Name resolution: the system resolver (getaddrinfo) and, with `--resolver`, a chosen
//! resolver through hickory, compared.

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::time::Duration;

use hickory_resolver::config::{NameServerConfig, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::Resolver;

/// Resolves through the system resolver.
pub fn system(host: &str, port: u16) -> Result<Vec<SocketAddr>, String> {
    let mut addrs: Vec<SocketAddr> = (host, port)
        .to_socket_addrs()
        .map_err(|e| e.to_string())?
        .collect();
    addrs.dedup();
    if addrs.is_empty() {
        return Err("no address".into());
    }
    Ok(addrs)
}

/// Resolves through the resolver at `server` (UDP, then TCP). `timeout` is one deadline
/// for the whole lookup (its A and AAAA queries, and a retry over TCP), as `--timeout` is
/// for the other steps of a probe.
pub fn with_resolver(
    host: &str,
    server: SocketAddr,
    timeout: Duration,
) -> Result<BTreeSet<IpAddr>, String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the resolver runtime: {e}"))?;
    runtime.block_on(async {
        let mut name_server = NameServerConfig::udp_and_tcp(server.ip());
        for connection in &mut name_server.connections {
            connection.port = server.port();
        }
        let config = ResolverConfig::from_parts(None, vec![], vec![name_server]);
        let mut builder = Resolver::builder_with_config(config, TokioRuntimeProvider::default());
        builder.options_mut().timeout = timeout;
        builder.options_mut().attempts = 1;
        let resolver = builder.build().map_err(|e| e.to_string())?;
        let lookup = tokio::time::timeout(
            timeout,
            resolver.lookup_ip(format!("{}.", host.trim_end_matches('.'))),
        )
        .await
        .map_err(|_| format!("no answer within the --timeout deadline of {timeout:?}"))?
        .map_err(|e| e.to_string())?;
        Ok(lookup.iter().collect())
    })
}
