//! Start misbehaving servers for benchmarks: `misbehave BEHAVIOR...` where BEHAVIOR is
//! `healthy`, `reset-on-accept`, `reset-after-request`, `idle-close:MS`, `reset-mid-body`,
//! `hang`, `slow:MS`, `503` or `garbage`. Prints one `URL` line per server, then runs until
//! stdin closes.

use std::io::Read;
use std::time::Duration;

use holdfast_testkit::{Behavior, Misbehaving};

fn parse(arg: &str) -> Option<Behavior> {
    let ms = |v: &str| v.parse().ok().map(Duration::from_millis);
    Some(match arg.split_once(':') {
        Some(("idle-close", v)) => Behavior::IdleClose(ms(v)?),
        Some(("slow", v)) => Behavior::Slow(ms(v)?),
        _ => match arg {
            "healthy" => Behavior::Healthy,
            "reset-on-accept" => Behavior::ResetOnAccept,
            "reset-after-request" => Behavior::ResetAfterRequest,
            "reset-mid-body" => Behavior::ResetMidBody,
            "hang" => Behavior::Hang,
            "503" => Behavior::Unavailable,
            "garbage" => Behavior::Garbage,
            _ => return None,
        },
    })
}

fn main() {
    let mut servers = Vec::new();
    for arg in std::env::args().skip(1) {
        let Some(behavior) = parse(&arg) else {
            eprintln!("unknown behavior `{arg}`");
            std::process::exit(2);
        };
        match Misbehaving::start(behavior) {
            Ok(s) => {
                println!("{}", s.url());
                servers.push(s);
            }
            Err(e) => {
                eprintln!("cannot start `{arg}`: {e}");
                std::process::exit(1);
            }
        }
    }
    let mut sink = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut sink);
}
