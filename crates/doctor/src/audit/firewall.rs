//! Firewall rules that answer with a TCP reset (`iptables-save -c`, `nft list ruleset`), with
//! their packet counters.

use std::process::Command;

use regex::Regex;

use super::{AuditOptions, Finding, Severity};

const CHECK: &str = "firewall";

/// A rule that sends resets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResetRule {
    /// The rule as written.
    pub rule: String,
    /// Packets it matched, when counters were shown.
    pub packets: Option<u64>,
}

/// Finds reset rules in `iptables-save -c` or `nft list ruleset` output.
pub fn parse_rules(text: &str) -> Vec<ResetRule> {
    let ipt_counter = Regex::new(r"^\[(\d+):(\d+)\]\s*").expect("static regex");
    let nft_counter = Regex::new(r"counter packets (\d+) bytes \d+").expect("static regex");
    let mut rules = Vec::new();
    for line in text.lines().map(str::trim) {
        let iptables = line.contains("--reject-with tcp-reset");
        let nft = line.contains("reject with tcp reset");
        if !iptables && !nft {
            continue;
        }
        let packets = if iptables {
            ipt_counter.captures(line).and_then(|c| c[1].parse().ok())
        } else {
            nft_counter.captures(line).and_then(|c| c[1].parse().ok())
        };
        let rule = ipt_counter.replace(line, "").into_owned();
        rules.push(ResetRule { rule, packets });
    }
    rules
}

/// Collects the rulesets: given files, or the tools' output.
fn rulesets(options: &AuditOptions, findings: &mut Vec<Finding>) -> Vec<(String, String)> {
    let mut sets = Vec::new();
    if !options.rulesets.is_empty() {
        for path in &options.rulesets {
            match std::fs::read_to_string(path) {
                Ok(text) => sets.push((path.display().to_string(), text)),
                Err(e) => findings.push(Finding::skip(
                    CHECK,
                    path.display().to_string(),
                    format!("cannot read: {e}"),
                )),
            }
        }
        return sets;
    }
    if !options.system_tools {
        findings.push(Finding::skip(
            CHECK,
            "firewall rules",
            "no ruleset given (--ruleset) and system tools are off for a staged proc root",
        ));
        return sets;
    }
    let tools: [(&str, &[&str]); 3] = [
        ("iptables-save", &["-c"]),
        ("ip6tables-save", &["-c"]),
        ("nft", &["list", "ruleset"]),
    ];
    for (tool, args) in tools {
        let label = format!("{tool} {}", args.join(" "));
        match Command::new(tool).args(args).output() {
            Ok(out) if out.status.success() => {
                sets.push((label, String::from_utf8_lossy(&out.stdout).into_owned()));
            }
            Ok(out) => findings.push(Finding::skip(
                CHECK,
                label,
                format!(
                    "failed ({}): {}",
                    out.status,
                    String::from_utf8_lossy(&out.stderr).trim()
                ),
            )),
            Err(e) => findings.push(Finding::skip(CHECK, label, format!("cannot run: {e}"))),
        }
    }
    sets
}

/// Adds one finding per reset rule, or an `ok` per ruleset without any.
pub fn check(options: &AuditOptions, findings: &mut Vec<Finding>) {
    for (source, text) in rulesets(options, findings) {
        let rules = parse_rules(&text);
        if rules.is_empty() {
            findings.push(Finding::ok(
                CHECK,
                source,
                "no rule answers with a TCP reset",
            ));
            continue;
        }
        for rule in rules {
            let (severity, value) = match rule.packets {
                Some(0) => (Severity::Info, "0 packets matched".to_string()),
                Some(n) => (Severity::Warn, format!("{n} packets matched")),
                None => (Severity::Info, "no counters shown".to_string()),
            };
            findings.push(Finding::new(
                CHECK,
                format!("{source}: {}", rule.rule),
                severity,
                value,
                "this rule answers matching connections with a forged TCP reset; clients see \
                 `connection reset` and blame the server",
                "make sure the match is intended; use DROP or a narrower match, or remove the rule",
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iptables_and_nft_reset_rules_are_found_with_counters() {
        let ipt = "*filter\n[5:300] -A FORWARD -p tcp -m tcp --dport 8082 -j REJECT --reject-with tcp-reset\n[9:9] -A INPUT -j ACCEPT\n";
        let rules = parse_rules(ipt);
        assert_eq!(rules.len(), 1);
        assert_eq!(rules[0].packets, Some(5));
        assert!(rules[0].rule.starts_with("-A FORWARD"));
        let nft = "table inet f {\n chain c {\n  tcp dport 25 counter packets 7 bytes 420 reject with tcp reset\n }\n}\n";
        assert_eq!(parse_rules(nft)[0].packets, Some(7));
    }
}
