//! `--host`, `--port` and `--flow` filters.

use std::net::{IpAddr, SocketAddr};

use super::decode::Segment;
use super::error::PcapError;

/// Which TCP segments to analyse. Empty means all.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Either end has this address.
    pub host: Option<IpAddr>,
    /// Either end has this port.
    pub port: Option<u16>,
    /// Exactly this pair of endpoints, in either direction.
    pub flow: Option<(SocketAddr, SocketAddr)>,
}

impl Filter {
    /// Parses the command-line values.
    pub fn parse(
        host: Option<&str>,
        port: Option<u16>,
        flow: Option<&str>,
    ) -> Result<Self, PcapError> {
        let host = host
            .map(|text| {
                text.trim_matches(|c| c == '[' || c == ']')
                    .parse::<IpAddr>()
                    .map_err(|_| PcapError::Filter {
                        key: "--host",
                        value: text.to_string(),
                        fix: "give an IPv4 or IPv6 address, e.g. --host 10.0.0.5",
                    })
            })
            .transpose()?;
        let flow = flow.map(parse_flow).transpose()?;
        Ok(Self { host, port, flow })
    }

    /// Whether `segment` passes.
    pub fn accepts(&self, segment: &Segment) -> bool {
        if let Some(host) = self.host {
            if segment.src != host && segment.dst != host {
                return false;
            }
        }
        if let Some(port) = self.port {
            if segment.sport != port && segment.dport != port {
                return false;
            }
        }
        if let Some((a, b)) = self.flow {
            let src = SocketAddr::new(segment.src, segment.sport);
            let dst = SocketAddr::new(segment.dst, segment.dport);
            if !((src == a && dst == b) || (src == b && dst == a)) {
                return false;
            }
        }
        true
    }
}

const FLOW_FIX: &str =
    "write two endpoints separated by a comma, e.g. --flow 10.0.0.1:51000,10.0.0.2:443 \
     (IPv6: [fd00::1]:51000,[fd00::2]:443)";

fn parse_flow(text: &str) -> Result<(SocketAddr, SocketAddr), PcapError> {
    let bad = || PcapError::Filter {
        key: "--flow",
        value: text.to_string(),
        fix: FLOW_FIX,
    };
    let (a, b) = text.split_once(',').ok_or_else(bad)?;
    let a = a.trim().parse::<SocketAddr>().map_err(|_| bad())?;
    let b = b.trim().parse::<SocketAddr>().map_err(|_| bad())?;
    Ok((a, b))
}
