//! Evidence sentences name the IP header field as it is: an IPv4 packet's TTL, an IPv6
//! packet's hop limit. Every attribution path that speaks of the field is staged twice, over
//! IPv4 and over IPv6, and the verdicts must agree while the words differ (human and JSON
//! output alike).

mod support;

use std::io::Cursor;

use holdfast_doctor::pcap::{self, Filter, ResetReport};
use support::synth::{self, Conversation, Link, Record, Tcp, ACK, FIN, PSH, RST, SYN};

/// TCP options (NOP, NOP, timestamps) sent as a segment's first 12 payload bytes; the
/// capture then marks them as options (data offset 8).
const OPTIONS: [u8; 12] = [1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2];

/// A sentence each family's evidence must contain, and the stage.
struct Case {
    name: &'static str,
    build: fn(bool) -> Conversation,
    v4: &'static [&'static str],
    v6: &'static [&'static str],
}

fn endpoints(v6: bool) -> Conversation {
    if v6 {
        Conversation::new("[2001:db8::10]:40000", "[2001:db8:1::7]:443")
    } else {
        Conversation::new("192.0.2.10:40000", "198.51.100.7:443")
    }
}

fn request(c: &mut Conversation) -> &mut Conversation {
    c.handshake()
        .send(true, PSH | ACK, b"GET / HTTP/1.1\r\n\r\n")
}

/// The server's usual TTL on its reset: the server's own stack.
fn app_abort(v6: bool) -> Conversation {
    let mut c = endpoints(v6);
    request(&mut c)
        .send(false, ACK, b"")
        .send(false, PSH | ACK, b"HTTP/1.1 200 OK\r\n");
    let ttl = c.server_ttl;
    c.server_rst(ttl, true, 0);
    c
}

/// A reset from hop 1 raced by the server's own data.
fn injected(v6: bool) -> Conversation {
    let mut c = endpoints(v6);
    request(&mut c).send(false, ACK, b"");
    c.server_rst(64, true, 0);
    c.send(false, PSH | ACK, b"HTTP/1.1 200 OK\r\n");
    c
}

/// A SYN answered by a reset, with nothing to compare its TTL with.
fn refused_without_baseline(v6: bool) -> Conversation {
    let mut c = endpoints(v6);
    c.send(true, SYN, b"").send(false, RST | ACK, b"");
    c
}

/// A SYN answered from the server's hop distance but another initial TTL (125 of 128
/// against the server's 61 of 64, both 4 hops away).
fn syn_answer_with_another_initial_ttl(v6: bool) -> Conversation {
    let (client, server, other) = if v6 {
        (
            "[2001:db8::10]:40000",
            "[2001:db8:1::7]:443",
            "[2001:db8::10]:39999",
        )
    } else {
        ("192.0.2.10:40000", "198.51.100.7:443", "192.0.2.10:39999")
    };
    let server_80 = server.replace(":443", ":80");
    let mut ok = Conversation::new(other, &server_80);
    ok.handshake()
        .send(true, FIN | ACK, b"")
        .send(false, FIN | ACK, b"");
    let mut c = Conversation::new(client, server);
    c.now_ns = ok.now_ns + 1_000_000;
    c.packets = ok.packets;
    c.send(true, SYN, b"");
    let syn_next = c.client_seq;
    c.push(Tcp {
        src: c.server.0,
        dst: c.client.0,
        sport: c.server.1,
        dport: c.client.1,
        seq: 0,
        ack: syn_next,
        flags: RST | ACK,
        ttl: 125,
        ip_id: 0,
        df: true,
        window: 0,
        payload: Vec::new(),
    });
    c
}

/// Both ends on one host, the reset with another TTL than the server's data.
fn loopback(v6: bool) -> Conversation {
    let mut c = if v6 {
        Conversation::new("[::1]:40000", "[::1]:8080")
    } else {
        Conversation::new("127.0.0.1:40000", "127.0.0.1:8080")
    };
    c.server_ttl = 64;
    request(&mut c).send(false, PSH | ACK, b"HTTP/1.1 200 OK\r\n");
    c.server_rst(255, true, 0);
    c
}

/// A client at the capture point whose packets had their TTL lowered on purpose (3), then
/// its own kernel's reset at the initial 64.
fn client_behind_low_ttl_probes(v6: bool) -> Conversation {
    let mut c = endpoints(v6);
    c.client_ttl = 3;
    request(&mut c);
    c.client_ttl = 64;
    c.send(true, RST | ACK, b"");
    c
}

/// A forger that copies the server's TTL: its RST has window 0 and no options while the
/// server's segments carry options, and a second RST jumps in sequence (two signals), after
/// the server acknowledged the request.
fn forged_with_the_servers_ttl(v6: bool) -> Conversation {
    let mut c = endpoints(v6);
    request(&mut c).send(false, ACK, &OPTIONS);
    c.server_seq = c.server_seq.wrapping_sub(OPTIONS.len() as u32);
    let (ttl, id) = (c.server_ttl, 107);
    c.server_rst(ttl, true, id);
    c.server_seq = c.server_seq.wrapping_add(1460);
    c.server_rst(ttl, true, id + 1);
    c
}

/// No handshake, no packet from the server before its reset 3 s after the client's data.
fn unprovoked_after_silence(v6: bool) -> Conversation {
    let mut c = endpoints(v6);
    c.send(true, PSH | ACK, b"GET / HTTP/1.1\r\n\r\n")
        .wait_ms(3000);
    let ttl = c.server_ttl;
    c.server_rst(ttl, true, 0);
    c
}

const CASES: &[Case] = &[
    Case {
        name: "app_abort",
        build: app_abort,
        v4: &["TTL 61, IP ID 0", "TTL 61 matches the server's own packets"],
        v6: &[
            "ack 1019, hop limit 61, window 0",
            "hop limit 61 matches the server's own packets",
        ],
    },
    Case {
        name: "injected",
        build: injected,
        v4: &[
            "TTL 64 (initial 64, hop 1) but the server's own packets in this connection arrive \
             with TTL 61 (initial 64, hop 4",
            "with its usual TTL: the RST raced genuine traffic",
        ],
        v6: &[
            "hop limit 64 (initial 64, hop 1) but the server's own packets in this connection \
             arrive with hop limit 61 (initial 64, hop 4",
            "with its usual hop limit: the RST raced genuine traffic",
        ],
    },
    Case {
        name: "refused_without_baseline",
        build: refused_without_baseline,
        v4: &["to compare its TTL 61 with"],
        v6: &["to compare its hop limit 61 with"],
    },
    Case {
        name: "syn_answer_with_another_initial_ttl",
        build: syn_answer_with_another_initial_ttl,
        v4: &[
            "with another initial TTL (128 against 64)",
            "a reset from the server's distance with another initial TTL fits neither",
        ],
        v6: &[
            "with another initial hop limit (128 against 64)",
            "a reset from the server's distance with another initial hop limit fits neither",
        ],
    },
    Case {
        name: "loopback",
        build: loopback,
        v4: &["so its TTL 255 (against TTL 64 in frame"],
        v6: &["so its hop limit 255 (against hop limit 64 in frame"],
    },
    Case {
        name: "client_behind_low_ttl_probes",
        build: client_behind_low_ttl_probes,
        v4: &[
            "TTL 64 is an initial TTL (no router passed) and higher than the client's own \
             packets in this connection (TTL 3, frame",
            "had their TTL lowered on purpose (TTL-limited probes)",
        ],
        v6: &[
            "hop limit 64 is an initial hop limit (no router passed) and higher than the \
             client's own packets in this connection (hop limit 3, frame",
            "had their hop limit lowered on purpose (hop-limited probes)",
        ],
    },
    Case {
        name: "forged_with_the_servers_ttl",
        build: forged_with_the_servers_ttl,
        v4: &[
            "although its TTL matches; frame",
            "a device forged the RST with the server's TTL, so its hop cannot be told",
        ],
        v6: &[
            "although its hop limit matches; frame",
            "a device forged the RST with the server's hop limit, so its hop cannot be told",
        ],
    },
    Case {
        name: "unprovoked_after_silence",
        build: unprovoked_after_silence,
        v4: &["and no TTL to tell the server from a middlebox"],
        v6: &["and no hop limit to tell the server from a middlebox"],
    },
];

/// Raw IP records, with the [`OPTIONS`] payloads turned into TCP options.
fn capture(c: &Conversation) -> Vec<u8> {
    let records: Vec<Record> = c
        .records(Link::Raw)
        .into_iter()
        .map(|mut record| {
            let tcp = if record.data[0] >> 4 == 6 { 40 } else { 20 };
            if record.data.get(tcp + 20..) == Some(&OPTIONS[..]) {
                record.data[tcp + 12] = 8 << 4;
            }
            record
        })
        .collect();
    synth::pcap(Link::Raw, &records, false, false, 65535)
}

fn only(c: &Conversation) -> ResetReport {
    let mut reports = Vec::new();
    let outcome = pcap::analyze(Cursor::new(capture(c)), &Filter::default(), |r| {
        reports.push(r)
    })
    .unwrap();
    assert!(outcome.damage.is_none(), "{:?}", outcome.damage);
    assert!(!reports.is_empty());
    reports.remove(reports.len() - 1)
}

#[test]
fn evidence_says_hop_limit_for_ipv6_and_ttl_for_ipv4() {
    for case in CASES {
        let v4 = only(&(case.build)(false));
        let v6 = only(&(case.build)(true));
        let (v4_text, v6_text) = (v4.human(), v6.human());
        let v4_json = serde_json::to_string(&v4.json()).unwrap();
        let v6_json = serde_json::to_string(&v6.json()).unwrap();
        let verdict = |r: &ResetReport| (r.verdict.resetter, r.verdict.cause, r.verdict.hop);
        assert_eq!(
            verdict(&v4),
            verdict(&v6),
            "{}: the family changes words, not verdicts:\n{v4_text}\n{v6_text}",
            case.name
        );
        for (report, text, json, wanted) in [
            (&v4, &v4_text, &v4_json, case.v4),
            (&v6, &v6_text, &v6_json, case.v6),
        ] {
            for phrase in wanted {
                assert!(
                    report
                        .verdict
                        .evidence
                        .iter()
                        .any(|e| e.text.contains(phrase)),
                    "{}: no {phrase:?} in\n{text}",
                    case.name
                );
                let quoted = serde_json::to_string(phrase).unwrap();
                assert!(
                    json.contains(quoted.trim_matches('"')),
                    "{}: JSON {json}",
                    case.name
                );
            }
        }
        assert!(
            !v6_text.contains("TTL"),
            "{}: IPv6 evidence names a TTL:\n{v6_text}",
            case.name
        );
        assert!(!v6_json.contains("TTL"), "{}: {v6_json}", case.name);
        assert!(
            !v4_text.contains("hop limit") && !v4_text.contains("hop-limited"),
            "{}: IPv4 evidence names a hop limit:\n{v4_text}",
            case.name
        );
        assert!(!v4_json.contains("hop limit"), "{}: {v4_json}", case.name);
    }
}

/// The JSON keys stay as documented in `docs/PCAP.md`; only the sentences changed.
#[test]
fn json_keys_are_unchanged_for_ipv6() {
    let report = only(&app_abort(true));
    let value = serde_json::to_value(report.json()).unwrap();
    let mut keys: Vec<&str> = value
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "cause",
            "client",
            "confidence",
            "evidence",
            "frame",
            "hop",
            "resetter",
            "roles_inferred",
            "server",
            "time"
        ]
    );
}
