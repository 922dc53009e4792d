//! Stages each scenario for real in a netlab lab and records the client-side capture.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::Child;
use std::time::Duration;

use holdfast_netlab::{Lab, LabError, Topology};

/// The actor programs (servers, clients, the injector).
const ACTORS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/actors.py");

const PORT: &str = "8080";

/// Starts an actor in a namespace and waits for its "ready" line.
fn start(netns: &holdfast_netlab::Netns, args: &[&str]) -> Result<Child, String> {
    let mut all = vec![ACTORS];
    all.extend_from_slice(args);
    let mut child = netns.spawn("python3", &all).map_err(|e| e.to_string())?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .map_err(|e| e.to_string())?;
    if line.trim() != "ready" {
        let _ = child.kill();
        let output = child.wait_with_output().map_err(|e| e.to_string())?;
        return Err(format!(
            "actor {args:?} did not start: {}",
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    Ok(child)
}

fn client(lab: &Lab, host: &str, port: &str, mode: &str, arg: &str) -> Result<(), String> {
    lab.client()
        .run("python3", &[ACTORS, "client", host, port, mode, arg])
        .map(drop)
        .map_err(|e| e.to_string())
}

fn router(lab: &Lab, args: &[&str]) -> Result<(), String> {
    lab.router()
        .run("iptables", args)
        .map(drop)
        .map_err(|e: LabError| e.to_string())
}

/// Stages scenario `name` and writes the client-side capture to `out`.
pub fn stage(name: &str, out: &Path) -> Result<(), String> {
    let lab = Lab::new().map_err(|e| e.to_string())?;
    let server = Topology::SERVER_V4;
    let mut actors: Vec<Child> = Vec::new();
    let mut serve = |lab: &Lab, host: &str, port: &str, mode: &str, arg: &str| {
        start(lab.server(), &["serve", host, port, mode, arg]).map(|c| actors.push(c))
    };
    // Set-up before recording.
    match name {
        "app_abort" => serve(&lab, "0.0.0.0", PORT, "linger0", "")?,
        "refused" => serve(&lab, "0.0.0.0", PORT, "ok", "")?,
        "firewall_reject" => {
            serve(&lab, "0.0.0.0", PORT, "ok", "")?;
            serve(&lab, "0.0.0.0", "8082", "ok", "")?;
            router(
                &lab,
                &[
                    "-A",
                    "FORWARD",
                    "-p",
                    "tcp",
                    "--dport",
                    "8082",
                    "-j",
                    "REJECT",
                    "--reject-with",
                    "tcp-reset",
                ],
            )?;
        }
        "content_filter" => {
            serve(&lab, "0.0.0.0", PORT, "ok", "")?;
            router(
                &lab,
                &[
                    "-A",
                    "FORWARD",
                    "-p",
                    "tcp",
                    "-m",
                    "string",
                    "--algo",
                    "bm",
                    "--string",
                    "forbidden",
                    "-j",
                    "REJECT",
                    "--reject-with",
                    "tcp-reset",
                ],
            )?;
        }
        "injected" => {
            serve(&lab, "0.0.0.0", PORT, "slow", "0.5")?;
            let injector = start(
                lab.router(),
                &["inject", Topology::ROUTER_CLIENT_IF, "inject-me", "30"],
            )?;
            actors.push(injector);
        }
        "idle_keepalive_close" => serve(&lab, "0.0.0.0", PORT, "keepalive", "0.5")?,
        "accept_queue_overflow" => {
            lab.server()
                .sysctl("net.ipv4.tcp_abort_on_overflow", "1")
                .map_err(|e| e.to_string())?;
            lab.server()
                .sysctl("net.ipv4.tcp_syncookies", "0")
                .map_err(|e| e.to_string())?;
            serve(&lab, "0.0.0.0", PORT, "noaccept", "")?;
            // Drop the handshakes' pure ACKs so each completes only with its data.
            router(
                &lab,
                &[
                    "-A",
                    "FORWARD",
                    "-p",
                    "tcp",
                    "--dport",
                    PORT,
                    "--sport",
                    "40003:40004",
                    "--tcp-flags",
                    "ALL",
                    "ACK",
                    "-j",
                    "DROP",
                ],
            )?;
        }
        "idle_timeout_middlebox" => {
            serve(&lab, "0.0.0.0", PORT, "echo", "")?;
            router(
                &lab,
                &[
                    "-A",
                    "FORWARD",
                    "-p",
                    "tcp",
                    "-m",
                    "conntrack",
                    "--ctstate",
                    "INVALID",
                    "-j",
                    "REJECT",
                    "--reject-with",
                    "tcp-reset",
                ],
            )?;
            for (key, value) in [
                ("net.netfilter.nf_conntrack_tcp_timeout_established", "2"),
                ("net.netfilter.nf_conntrack_tcp_loose", "0"),
            ] {
                lab.router().sysctl(key, value).map_err(|e| e.to_string())?;
            }
        }
        "client_abort" => serve(&lab, "0.0.0.0", PORT, "slow", "2")?,
        "ipv6_app_abort" => serve(&lab, "::", PORT, "linger0", "")?,
        other => return Err(format!("unknown scenario {other}")),
    }
    let recording = lab
        .client()
        .record(Topology::CLIENT_IF, out, &["tcp"])
        .map_err(|e| e.to_string())?;
    match name {
        "app_abort" => client(&lab, server, PORT, "get", "index")?,
        "refused" => {
            client(&lab, server, PORT, "get", "index")?;
            client(&lab, server, "8081", "syn", "")?;
        }
        "firewall_reject" => {
            client(&lab, server, PORT, "get", "index")?;
            client(&lab, server, "8082", "syn", "")?;
        }
        "content_filter" => client(&lab, server, PORT, "get", "forbidden")?,
        "injected" => client(&lab, server, PORT, "get", "inject-me")?,
        "idle_keepalive_close" => client(&lab, server, PORT, "pause-get", "1.5")?,
        "accept_queue_overflow" => client(&lab, server, PORT, "overflow", "")?,
        "idle_timeout_middlebox" => client(&lab, server, PORT, "pause-get", "3.5")?,
        "client_abort" => client(&lab, server, PORT, "abort", "0.3")?,
        "ipv6_app_abort" => client(&lab, Topology::SERVER_V6, PORT, "get", "index")?,
        _ => {}
    }
    // Let late packets (the injection race, retransmissions) arrive.
    std::thread::sleep(Duration::from_millis(1500));
    recording.stop().map_err(|e| e.to_string())?;
    for mut actor in actors {
        let _ = actor.kill();
        let _ = actor.wait();
    }
    Ok(())
}
