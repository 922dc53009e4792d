//! The three-namespace topology: client, router, server.

use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use crate::error::LabError;
use crate::netns::{run_checked, Netns};

/// Distinguishes labs built by the same process.
static LAB_COUNTER: AtomicU32 = AtomicU32::new(0);

/// Addresses and interface names of the lab. The same in every lab: each lab has its own
/// namespaces, so they never clash.
#[derive(Debug, Clone, Copy)]
pub struct Topology;

impl Topology {
    /// The client's interface (towards the router).
    pub const CLIENT_IF: &'static str = "c0";
    /// The router's interface towards the client.
    pub const ROUTER_CLIENT_IF: &'static str = "r0";
    /// The router's interface towards the server.
    pub const ROUTER_SERVER_IF: &'static str = "r1";
    /// The server's interface (towards the router).
    pub const SERVER_IF: &'static str = "s0";
    /// Client IPv4 address.
    pub const CLIENT_V4: &'static str = "10.66.1.2";
    /// Router IPv4 address on the client side.
    pub const ROUTER_CLIENT_V4: &'static str = "10.66.1.1";
    /// Router IPv4 address on the server side.
    pub const ROUTER_SERVER_V4: &'static str = "10.66.2.1";
    /// Server IPv4 address.
    pub const SERVER_V4: &'static str = "10.66.2.2";
    /// Client IPv6 address.
    pub const CLIENT_V6: &'static str = "fd66:1::2";
    /// Router IPv6 address on the client side.
    pub const ROUTER_CLIENT_V6: &'static str = "fd66:1::1";
    /// Router IPv6 address on the server side.
    pub const ROUTER_SERVER_V6: &'static str = "fd66:2::1";
    /// Server IPv6 address.
    pub const SERVER_V6: &'static str = "fd66:2::2";
}

/// A built lab. Dropping it kills the processes left in its namespaces and deletes them.
#[derive(Debug)]
pub struct Lab {
    client: Netns,
    router: Netns,
    server: Netns,
}

impl Lab {
    /// Says whether a lab can be built here: `Ok(())`, or the reason it cannot (print it
    /// and skip the test).
    pub fn available() -> Result<(), LabError> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return Err(LabError::Unavailable(
                "needs root (network namespaces)".into(),
            ));
        }
        for tool in ["ip", "iptables", "tcpdump", "ethtool"] {
            let found = Command::new("sh")
                .args(["-c", &format!("command -v {tool}")])
                .output()
                .map(|out| out.status.success())
                .unwrap_or(false);
            if !found {
                return Err(LabError::Unavailable(format!(
                    "`{tool}` is not installed (run scripts/install-deps)"
                )));
            }
        }
        let probe = format!("{}probe-{}", name_prefix(), std::process::id());
        run_checked(ip(&["netns", "add", &probe]))
            .map_err(|err| LabError::Unavailable(format!("`ip netns add` does not work: {err}")))?;
        let _ = run_checked(ip(&["netns", "del", &probe]));
        Ok(())
    }

    /// Builds the client/router/server lab (see the crate docs for the addresses). The
    /// namespaces are named `hf<pid>-<n>-client` and so on; `HOLDFAST_NETLAB_PREFIX` replaces
    /// `hf` (letters and digits, at most 4).
    pub fn new() -> Result<Self, LabError> {
        let id = LAB_COUNTER.fetch_add(1, Ordering::Relaxed);
        let prefix = format!("{}{}-{}", name_prefix(), std::process::id(), id);
        let lab = Self {
            client: Netns::new(format!("{prefix}-client")),
            router: Netns::new(format!("{prefix}-router")),
            server: Netns::new(format!("{prefix}-server")),
        };
        for netns in [&lab.client, &lab.router, &lab.server] {
            run_checked(ip(&["netns", "add", netns.name()]))?;
        }
        // From here on, Drop cleans up whatever was built.
        lab.wire()?;
        Ok(lab)
    }

    /// The client namespace.
    pub fn client(&self) -> &Netns {
        &self.client
    }

    /// The router namespace (forwarding on; put iptables rules and injectors here).
    pub fn router(&self) -> &Netns {
        &self.router
    }

    /// The server namespace.
    pub fn server(&self) -> &Netns {
        &self.server
    }

    fn wire(&self) -> Result<(), LabError> {
        self.veth(
            &self.client,
            Topology::CLIENT_IF,
            Topology::ROUTER_CLIENT_IF,
        )?;
        self.veth(
            &self.server,
            Topology::SERVER_IF,
            Topology::ROUTER_SERVER_IF,
        )?;
        let side = |netns: &Netns, dev: &str, v4: &str, v6: &str| -> Result<(), LabError> {
            netns.run("ip", &["addr", "add", &format!("{v4}/24"), "dev", dev])?;
            netns.run(
                "ip",
                &[
                    "-6",
                    "addr",
                    "add",
                    &format!("{v6}/64"),
                    "dev",
                    dev,
                    "nodad",
                ],
            )?;
            netns.run("ip", &["link", "set", dev, "up"])?;
            // Wire-sized segments in captures; not every veth supports every flag.
            let _ = netns.run(
                "ethtool",
                &["-K", dev, "tso", "off", "gso", "off", "gro", "off"],
            );
            Ok(())
        };
        for netns in [&self.client, &self.router, &self.server] {
            netns.run("ip", &["link", "set", "lo", "up"])?;
        }
        side(
            &self.client,
            Topology::CLIENT_IF,
            Topology::CLIENT_V4,
            Topology::CLIENT_V6,
        )?;
        side(
            &self.router,
            Topology::ROUTER_CLIENT_IF,
            Topology::ROUTER_CLIENT_V4,
            Topology::ROUTER_CLIENT_V6,
        )?;
        side(
            &self.router,
            Topology::ROUTER_SERVER_IF,
            Topology::ROUTER_SERVER_V4,
            Topology::ROUTER_SERVER_V6,
        )?;
        side(
            &self.server,
            Topology::SERVER_IF,
            Topology::SERVER_V4,
            Topology::SERVER_V6,
        )?;
        self.client.run(
            "ip",
            &["route", "add", "default", "via", Topology::ROUTER_CLIENT_V4],
        )?;
        self.client.run(
            "ip",
            &[
                "-6",
                "route",
                "add",
                "default",
                "via",
                Topology::ROUTER_CLIENT_V6,
            ],
        )?;
        self.server.run(
            "ip",
            &["route", "add", "default", "via", Topology::ROUTER_SERVER_V4],
        )?;
        self.server.run(
            "ip",
            &[
                "-6",
                "route",
                "add",
                "default",
                "via",
                Topology::ROUTER_SERVER_V6,
            ],
        )?;
        self.router.sysctl("net.ipv4.ip_forward", "1")?;
        self.router.sysctl("net.ipv6.conf.all.forwarding", "1")?;
        Ok(())
    }

    /// Creates a veth pair directly inside `end` and the router, named `end_if` / `router_if`.
    fn veth(&self, end: &Netns, end_if: &str, router_if: &str) -> Result<(), LabError> {
        run_checked(ip(&[
            "link",
            "add",
            end_if,
            "netns",
            end.name(),
            "type",
            "veth",
            "peer",
            "name",
            router_if,
            "netns",
            self.router.name(),
        ]))
        .map(drop)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for netns in [&self.client, &self.router, &self.server] {
            kill_processes_in(netns);
            let _ = run_checked(ip(&["netns", "del", netns.name()]));
        }
    }
}

/// Kills every process still running in `netns` (all of them were started by this lab's user).
fn kill_processes_in(netns: &Netns) {
    let Ok(out) = run_checked(ip(&["netns", "pids", netns.name()])) else {
        return;
    };
    for pid in String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter_map(|pid| pid.parse::<i32>().ok())
    {
        // SAFETY: plain kill(2); the pid lives in a namespace this lab created.
        unsafe {
            libc::kill(pid, libc::SIGKILL);
        }
    }
}

fn ip(args: &[&str]) -> Command {
    let mut command = Command::new("ip");
    command.args(args);
    command
}

/// The prefix of namespace names: `HOLDFAST_NETLAB_PREFIX` when it is 1 to 4 letters or
/// digits, else `hf`.
fn name_prefix() -> String {
    std::env::var("HOLDFAST_NETLAB_PREFIX")
        .ok()
        .filter(|p| (1..=4).contains(&p.len()) && p.chars().all(|c| c.is_ascii_alphanumeric()))
        .unwrap_or_else(|| "hf".into())
}
