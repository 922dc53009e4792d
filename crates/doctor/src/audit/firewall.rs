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
    system_rulesets(&run_tool, findings)
}

/// What running a tool gave: its stdout, or why it failed.
pub type ToolResult = Result<String, String>;

fn run_tool(tool: &str, args: &[&str]) -> ToolResult {
    match Command::new(tool).args(args).output() {
        Ok(out) if out.status.success() => Ok(String::from_utf8_lossy(&out.stdout).into_owned()),
        Ok(out) => Err(format!(
            "failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )),
        Err(e) => Err(format!("cannot run: {e}")),
    }
}

/// The rulesets of this host, from `run` (the tools). With the nf_tables variant of iptables
/// (`iptables -V` says `nf_tables`), `nft list ruleset` also shows the tables iptables manages
/// (`ip`/`ip6` `filter`, `nat`, `mangle`, `raw`, `security`): those are taken from
/// `iptables-save`/`ip6tables-save` only, so each rule is reported once.
pub fn system_rulesets(
    run: &dyn Fn(&str, &[&str]) -> ToolResult,
    findings: &mut Vec<Finding>,
) -> Vec<(String, String)> {
    let mut sets = Vec::new();
    let nf_tables = run("iptables", &["-V"]).is_ok_and(|v| v.contains("nf_tables"));
    let mut saved = Vec::new();
    let tools: [(&str, &str); 2] = [("iptables-save", "ip"), ("ip6tables-save", "ip6")];
    for (tool, family) in tools {
        let label = format!("{tool} -c");
        match run(tool, &["-c"]) {
            Ok(text) => {
                sets.push((label, text));
                saved.push(family);
            }
            Err(reason) => findings.push(Finding::skip(CHECK, label, reason)),
        }
    }
    let label = "nft list ruleset";
    match run("nft", &["list", "ruleset"]) {
        Ok(text) if nf_tables && !saved.is_empty() => sets.push((
            format!(
                "{label} (without the iptables-nft tables of {})",
                saved.join(", ")
            ),
            without_iptables_tables(&text, &saved),
        )),
        Ok(text) => sets.push((label.to_string(), text)),
        Err(reason) => findings.push(Finding::skip(CHECK, label, reason)),
    }
    sets
}

/// `nft list ruleset` output without the tables iptables-nft manages for `families`.
pub fn without_iptables_tables(text: &str, families: &[&str]) -> String {
    const IPTABLES_TABLES: [&str; 5] = ["filter", "nat", "mangle", "raw", "security"];
    let mut out = String::new();
    let mut depth = 0i64;
    let mut skipping = false;
    for line in text.lines() {
        if depth == 0 {
            let words: Vec<&str> = line.split_whitespace().collect();
            skipping = matches!(
                words.as_slice(),
                ["table", family, name, "{", ..]
                    if families.contains(family) && IPTABLES_TABLES.contains(name)
            );
        }
        depth += line.matches('{').count() as i64 - line.matches('}').count() as i64;
        if !skipping {
            out.push_str(line);
            out.push('\n');
        }
        if depth <= 0 {
            depth = 0;
        }
    }
    out
}

/// Adds one finding per reset rule, or an `ok` per ruleset without any.
pub fn check(options: &AuditOptions, findings: &mut Vec<Finding>) {
    let sets = rulesets(options, findings);
    report_rules(sets, findings);
}

/// One finding per reset rule in `sets`, or an `ok` per ruleset without any.
pub fn report_rules(sets: Vec<(String, String)>, findings: &mut Vec<Finding>) {
    for (source, text) in sets {
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
    fn iptables_nft_rules_are_reported_once() {
        let ipt = "*filter\n:INPUT ACCEPT [0:0]\n[5:300] -A INPUT -p tcp -m tcp --dport 8082 -j REJECT --reject-with tcp-reset\nCOMMIT\n";
        let nft = "# Warning: table ip filter is managed by iptables-nft, do not touch!\n\
            table ip filter {\n\tchain INPUT {\n\t\ttype filter hook input priority filter; policy accept;\n\
            \t\tmeta l4proto tcp tcp dport 8082 counter packets 5 bytes 300 reject with tcp reset\n\t}\n}\n\
            table inet mine {\n\tchain c {\n\t\ttcp dport 25 counter packets 7 bytes 420 reject with tcp reset\n\t}\n}\n";
        let run = |variant: &'static str| {
            move |tool: &str, _: &[&str]| -> ToolResult {
                match tool {
                    "iptables" => Ok(format!("iptables v1.8.9 ({variant})")),
                    "iptables-save" => Ok(ipt.to_string()),
                    "ip6tables-save" => Ok(String::new()),
                    "nft" => Ok(nft.to_string()),
                    _ => Err("no such tool".into()),
                }
            }
        };
        let rules_of = |variant: &'static str| {
            let mut findings = Vec::new();
            let sets = system_rulesets(&run(variant), &mut findings);
            report_rules(sets, &mut findings);
            findings
                .into_iter()
                .filter(|f| f.value.contains("packets matched"))
                .map(|f| f.subject)
                .collect::<Vec<_>>()
        };
        let rules = rules_of("nf_tables");
        assert_eq!(rules.len(), 2, "{rules:#?}");
        assert!(rules[0].starts_with("iptables-save -c: -A INPUT"));
        assert!(rules[1].contains("tcp dport 25"));
        // With legacy iptables the nf_tables ruleset is separate: both are read.
        assert_eq!(rules_of("legacy").len(), 3);
    }

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
