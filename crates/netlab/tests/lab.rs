//! The lab builds, routes client to server through the router (v4 and v6), records with
//! tcpdump, applies router iptables rules, and leaves no namespace behind.

use std::io::BufRead;
use std::process::Child;

use holdfast_netlab::{Lab, Topology};

fn lab_or_skip() -> Option<Lab> {
    if let Err(reason) = Lab::available() {
        eprintln!("skipping: {reason}");
        return None;
    }
    Some(Lab::new().expect("lab builds"))
}

/// A listener on port 9 in the server namespace (dual-stack with "::") that accepts `count`
/// connections.
fn listen(lab: &Lab, host: &str, count: usize) -> Child {
    let family = if host.contains(':') {
        "AF_INET6"
    } else {
        "AF_INET"
    };
    let script = format!(
        "import socket\n\
         s=socket.socket(socket.{family})\n\
         s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\n\
         s.bind(('{host}',9))\n\
         s.listen()\n\
         print('ready',flush=True)\n\
         for _ in range({count}):\n    c,_=s.accept()\n    c.close()\n"
    );
    let mut server = lab.server().spawn("python3", &["-c", &script]).unwrap();
    let mut ready = String::new();
    std::io::BufReader::new(server.stdout.take().unwrap())
        .read_line(&mut ready)
        .unwrap();
    assert_eq!(ready.trim(), "ready");
    server
}

/// Opens (and closes) a TCP connection from the client namespace to `address` port 9.
fn connect(lab: &Lab, address: &str) -> Result<(), holdfast_netlab::LabError> {
    let script =
        format!("import socket; socket.create_connection(('{address}', 9), timeout=10).close()");
    lab.client().run("python3", &["-c", &script]).map(drop)
}

#[test]
fn client_reaches_server_through_router_and_capture_records_it() {
    let Some(lab) = lab_or_skip() else { return };
    let dir = std::env::temp_dir().join(format!("netlab-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("connect.pcap");
    let mut server = listen(&lab, "::", 2);
    let recording = lab
        .client()
        .record(Topology::CLIENT_IF, &file, &["tcp"])
        .expect("tcpdump starts");
    for address in [Topology::SERVER_V4, Topology::SERVER_V6] {
        connect(&lab, address)
            .unwrap_or_else(|e| panic!("connect to {address} through the router: {e}"));
    }
    let path = recording.stop().unwrap();
    let _ = server.kill();
    let _ = server.wait();
    let bytes = std::fs::read(&path).unwrap();
    // pcap header plus at least two handshakes (6 packets of 16 + 54 bytes or more).
    assert!(
        bytes.len() > 24 + 6 * 70,
        "capture too small: {}",
        bytes.len()
    );
    let names: Vec<String> = [lab.client(), lab.router(), lab.server()]
        .iter()
        .map(|n| n.name().to_string())
        .collect();
    drop(lab);
    let listed = std::process::Command::new("ip")
        .args(["netns", "list"])
        .output()
        .unwrap();
    let listed = String::from_utf8_lossy(&listed.stdout);
    for name in names {
        assert!(!listed.contains(&name), "{name} left behind");
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn router_iptables_rule_rejects_with_reset() {
    let Some(lab) = lab_or_skip() else { return };
    let mut server = listen(&lab, "0.0.0.0", 1);
    lab.router()
        .run(
            "iptables",
            &[
                "-A",
                "FORWARD",
                "-p",
                "tcp",
                "--dport",
                "9",
                "-j",
                "REJECT",
                "--reject-with",
                "tcp-reset",
            ],
        )
        .expect("iptables works in the router");
    let err = connect(&lab, Topology::SERVER_V4);
    assert!(err.is_err(), "connection to a rejected port must fail");
    let _ = server.kill();
    let _ = server.wait();
}

#[test]
fn unrejected_port_is_reachable_so_the_reject_test_can_fail() {
    let Some(lab) = lab_or_skip() else { return };
    let mut server = listen(&lab, "0.0.0.0", 1);
    connect(&lab, Topology::SERVER_V4).expect("connects when no rule rejects");
    let _ = server.wait();
}
