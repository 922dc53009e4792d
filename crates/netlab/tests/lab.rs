//! The lab builds, routes client to server through the router (v4 and v6), records with
//! tcpdump, and leaves no namespace behind.

use holdfast_netlab::{Lab, Topology};

fn lab_or_skip() -> Option<Lab> {
    if let Err(reason) = Lab::available() {
        eprintln!("skipping: {reason}");
        return None;
    }
    Some(Lab::new().expect("lab builds"))
}

#[test]
fn client_reaches_server_through_router_and_capture_records_it() {
    let Some(lab) = lab_or_skip() else { return };
    let dir = std::env::temp_dir().join(format!("netlab-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("ping.pcap");
    let recording = lab
        .client()
        .record(Topology::CLIENT_IF, &file, &["icmp", "or", "icmp6"])
        .expect("tcpdump starts");
    lab.client()
        .run("ping", &["-c", "1", "-W", "5", Topology::SERVER_V4])
        .expect("v4 ping through the router");
    lab.client()
        .run("ping", &["-6", "-c", "1", "-W", "5", Topology::SERVER_V6])
        .expect("v6 ping through the router");
    let path = recording.stop().unwrap();
    let bytes = std::fs::read(&path).unwrap();
    // pcap header (24 bytes) plus at least the echo request and reply.
    assert!(
        bytes.len() > 24 + 2 * 16,
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
    let err = lab.client().run(
        "bash",
        &["-c", &format!("exec 3<>/dev/tcp/{}/9", Topology::SERVER_V4)],
    );
    assert!(err.is_err(), "connection to a rejected port must fail");
}

#[test]
fn unrejected_port_is_reachable_so_the_reject_test_can_fail() {
    let Some(lab) = lab_or_skip() else { return };
    let mut server = lab
        .server()
        .spawn("python3", &["-c", "import socket,time\ns=socket.socket()\ns.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\ns.bind(('0.0.0.0',9))\ns.listen()\nprint('ready',flush=True)\nc,_=s.accept()\ntime.sleep(1)"])
        .unwrap();
    let mut ready = String::new();
    use std::io::BufRead;
    std::io::BufReader::new(server.stdout.take().unwrap())
        .read_line(&mut ready)
        .unwrap();
    assert_eq!(ready.trim(), "ready");
    lab.client()
        .run(
            "bash",
            &["-c", &format!("exec 3<>/dev/tcp/{}/9", Topology::SERVER_V4)],
        )
        .expect("connects when no rule rejects");
    let _ = server.kill();
    let _ = server.wait();
}
