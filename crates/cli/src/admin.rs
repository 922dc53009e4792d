//! `holdfast admin ...`: the API-management CLI. It talks to the admin REST API of a running
//! `holdfast serve` over HTTP (`--url`, `--token`), so it needs no database access and obeys
//! the same roles as any other admin client. Prints tables, or the API's JSON with `--json`.

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use serde_json::{json, Value};

/// Manage tenants, services, consumers, keys, subscriptions; show analytics.
#[derive(Args)]
pub struct AdminArgs {
    /// Base URL of the admin listener (`server.admin`).
    #[arg(
        long,
        global = true,
        env = "HOLDFAST_ADMIN_URL",
        default_value = "http://127.0.0.1:9901"
    )]
    url: String,
    /// Admin token (from `[[management.admin_tokens]]`).
    #[arg(
        long,
        global = true,
        env = "HOLDFAST_ADMIN_TOKEN",
        hide_env_values = true
    )]
    token: Option<String>,
    /// The tenant the command is about (`stats` without it: every tenant, super admin only).
    /// Like `--url`, `--token` and `--json`, it may come before or after the command.
    #[arg(long, global = true, env = "HOLDFAST_TENANT", value_parser = non_empty_tenant)]
    tenant: Option<String>,
    /// Print the API's JSON instead of a table.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: AdminCommand,
}

#[derive(Args)]
struct Limits {
    /// Requests per second.
    #[arg(long)]
    rps: Option<u32>,
    /// Requests per minute.
    #[arg(long)]
    rpm: Option<u32>,
    /// AI tokens per minute.
    #[arg(long)]
    tokens_per_min: Option<u64>,
    /// AI tokens per day.
    #[arg(long)]
    tokens_per_day: Option<u64>,
    /// AI tokens per month.
    #[arg(long)]
    tokens_per_month: Option<u64>,
}

/// `--tenant` / `HOLDFAST_TENANT`: an empty value is a mistake (an unset variable), not a name.
fn non_empty_tenant(s: &str) -> Result<String, String> {
    if s.trim().is_empty() {
        Err("the tenant is empty: pass --tenant NAME or set HOLDFAST_TENANT".into())
    } else {
        Ok(s.to_string())
    }
}

impl Limits {
    fn is_empty(&self) -> bool {
        self.to_json().as_object().is_none_or(|m| m.is_empty())
    }

    /// The `limits` of a PATCH: replaced when a limit flag or `clear` is given, else unchanged.
    fn patch(&self, clear: bool, body: &mut Value) -> anyhow::Result<()> {
        if clear && !self.is_empty() {
            bail!("--no-limits removes every limit: do not combine it with limit flags");
        }
        if clear || !self.is_empty() {
            body["limits"] = self.to_json();
        }
        Ok(())
    }

    fn to_json(&self) -> Value {
        let mut m = serde_json::Map::new();
        let fields = [
            ("rps", self.rps.map(u64::from)),
            ("rpm", self.rpm.map(u64::from)),
            ("tokens_per_min", self.tokens_per_min),
            ("tokens_per_day", self.tokens_per_day),
            ("tokens_per_month", self.tokens_per_month),
        ];
        for (k, v) in fields {
            if let Some(v) = v {
                m.insert(k.into(), json!(v));
            }
        }
        Value::Object(m)
    }
}

#[derive(Subcommand)]
enum AdminCommand {
    /// Tenants: `create NAME`, `list`, `delete NAME [--force]`.
    Tenant {
        #[command(subcommand)]
        action: TenantAction,
    },
    /// Services of a tenant.
    Service {
        #[command(subcommand)]
        action: ServiceAction,
    },
    /// Consumers of a tenant.
    Consumer {
        #[command(subcommand)]
        action: ConsumerAction,
    },
    /// API keys of a tenant's consumers.
    Key {
        #[command(subcommand)]
        action: KeyAction,
    },
    /// Subscribe a consumer to a service (pending if the service requires approval).
    Subscribe {
        #[arg(long)]
        consumer: String,
        #[arg(long)]
        service: String,
    },
    /// List a tenant's subscriptions.
    Subscriptions,
    /// Approve a pending subscription.
    Approve {
        /// Subscription id.
        id: i64,
    },
    /// Reject a pending subscription.
    Reject { id: i64 },
    /// Delete a subscription (the consumer may then subscribe again, e.g. after a rejection).
    Unsubscribe {
        /// Subscription id.
        id: i64,
    },
    /// The call log: calls stored, the writer's counters (queued, written, overflow, ...) and
    /// the management cache's state (super admin).
    Calllog,
    /// Delete stored calls older than `--older-than` (default: the configured retention).
    Prune {
        /// An age such as 30s, 15m, 12h or 7d.
        #[arg(long, value_name = "DURATION")]
        older_than: Option<String>,
    },
    /// Analytics: calls, error rate, p50/p95/p99 per bucket; top lists; resets; tokens.
    Stats {
        #[arg(long, default_value = "1h")]
        since: String,
        #[arg(long, default_value = "1m")]
        bucket: String,
        /// Entries in each top list (the API's default when not given).
        #[arg(long)]
        top: Option<u32>,
    },
}

#[derive(Subcommand)]
enum TenantAction {
    /// Create a tenant (super admin).
    Create { name: String },
    /// List the tenants this token may see.
    List,
    /// Delete a tenant (super admin). With services or consumers left it is refused unless
    /// `--force`, which deletes them too (with their keys and subscriptions).
    Delete {
        name: String,
        #[arg(long)]
        force: bool,
    },
}

#[derive(Subcommand)]
enum ServiceAction {
    /// Create a service with its first version.
    Create {
        name: String,
        /// Subscriptions wait for a tenant admin's approval.
        #[arg(long)]
        require_approval: bool,
        /// The service's first version.
        #[arg(long, default_value = "v1")]
        version: String,
        /// The first version's lifecycle state: `draft` keeps the service uncallable until
        /// `service version NAME V published`.
        #[arg(long, default_value = "published", value_parser = ["draft", "published", "deprecated", "retired"])]
        state: String,
        #[command(flatten)]
        limits: Limits,
    },
    /// List the tenant's services.
    List,
    /// Show one service.
    Show { name: String },
    /// Change `require_approval` and/or the limits (limit flags replace all the limits).
    Update {
        name: String,
        /// true or false (existing subscriptions keep their state).
        #[arg(long)]
        require_approval: Option<bool>,
        /// Remove every limit.
        #[arg(long)]
        no_limits: bool,
        #[command(flatten)]
        limits: Limits,
    },
    /// Delete a service with its versions and the subscriptions to it.
    Delete { name: String },
    /// Add a version or set its state (draft, published, deprecated, retired).
    Version {
        service: String,
        version: String,
        state: String,
        /// When the version is planned to go away: `2027-06-30` (midnight UTC) or RFC 3339
        /// (`2027-06-30T12:00:00Z`). Its answers then carry `Sunset` (RFC 8594). Without it,
        /// the version has no planned end (a sunset set before is removed).
        #[arg(long, value_parser = parse_sunset)]
        sunset: Option<i64>,
    },
}

#[derive(Subcommand)]
enum ConsumerAction {
    /// Show one consumer.
    Show { name: String },
    /// Replace the consumer's limits.
    Update {
        name: String,
        /// Remove every limit.
        #[arg(long)]
        no_limits: bool,
        #[command(flatten)]
        limits: Limits,
    },
    /// Delete a consumer with its API keys and subscriptions.
    Delete { name: String },
    /// Create a consumer.
    Create {
        name: String,
        #[command(flatten)]
        limits: Limits,
    },
    /// List the tenant's consumers.
    List,
}

#[derive(Subcommand)]
enum KeyAction {
    /// Issue a key; it is printed once and never again.
    Issue {
        #[arg(long)]
        consumer: String,
        #[arg(long)]
        expires_in_s: Option<u64>,
        #[command(flatten)]
        limits: Limits,
    },
    /// List the tenant's keys (prefixes, never the keys).
    List,
    /// Revoke a key (its prefix, e.g. `hf_1a2b3c4d`, or the whole key).
    Revoke { prefix: String },
    /// Change a key's limits (flags replace all its limits) and/or its expiry.
    Update {
        prefix: String,
        /// Expire this many seconds from now.
        #[arg(long, conflicts_with = "no_expiry")]
        expires_in_s: Option<u64>,
        /// Remove the expiry.
        #[arg(long)]
        no_expiry: bool,
        /// Remove every limit.
        #[arg(long)]
        no_limits: bool,
        #[command(flatten)]
        limits: Limits,
    },
}

/// Run one admin command; the exit status is 0 on success. A failure is printed here, as
/// one line with its causes (`holdfast admin: ...`), and answers status 1: no debug
/// rendering (with `RUST_BACKTRACE=1`, anyhow's would add a backtrace of the CLI itself).
pub fn run(args: AdminArgs) -> anyhow::Result<u8> {
    let result = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(anyhow::Error::from)
        .and_then(|rt| rt.block_on(run_async(args)));
    match result {
        Ok(status) => Ok(status),
        Err(e) => {
            eprintln!("holdfast admin: {e:#}");
            Ok(1)
        }
    }
}

/// `s` percent-encoded for a query string.
fn query_value(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `s` percent-encoded as one URL path segment (a name with `/` or `?` stays one segment,
/// and the API answers about that name).
fn seg(s: &str) -> String {
    query_value(s)
}

/// A key prefix from what the user gave: the prefix itself, or the whole key (its first 11
/// characters; the secret part is never sent).
fn key_prefix(given: &str) -> &str {
    let b = given.as_bytes();
    let is_key = b.len() > 12
        && given.starts_with("hf_")
        && b[3..11].iter().all(u8::is_ascii_hexdigit)
        && b[11] == b'_';
    if is_key {
        &given[..11]
    } else {
        given
    }
}

async fn run_async(args: AdminArgs) -> anyhow::Result<u8> {
    use AdminCommand as C;
    let Some(token) = args.token.as_deref() else {
        bail!("no admin token: pass --token TOKEN or set HOLDFAST_ADMIN_TOKEN");
    };
    // Every command but these is about one tenant.
    let needs_tenant = !matches!(
        args.command,
        C::Tenant { .. } | C::Calllog | C::Prune { .. } | C::Stats { .. }
    );
    let tenant: &str = match args.tenant.as_deref() {
        Some(t) => t,
        None if needs_tenant => {
            bail!("this command needs a tenant: pass --tenant NAME or set HOLDFAST_TENANT")
        }
        None => "",
    };
    let (method, path, body, columns): (&str, String, Option<Value>, &[&str]) = match &args.command
    {
        C::Tenant {
            action: TenantAction::Create { name },
        } => (
            "POST",
            "/admin/tenants".into(),
            Some(json!({ "name": name })),
            &["name"],
        ),
        C::Tenant {
            action: TenantAction::List,
        } => ("GET", "/admin/tenants".into(), None, &["name"]),
        C::Tenant {
            action: TenantAction::Delete { name, force },
        } => (
            "DELETE",
            format!(
                "/admin/tenants/{}{}",
                seg(name),
                if *force { "?force=true" } else { "" }
            ),
            None,
            &["deleted"],
        ),
        C::Service {
            action:
                ServiceAction::Create {
                    name,
                    require_approval,
                    version,
                    state,
                    limits,
                },
        } => (
            "POST",
            format!("/admin/tenants/{}/services", seg(tenant)),
            Some(json!({
                "name": name,
                "require_approval": require_approval,
                "limits": limits.to_json(),
                "versions": [{ "version": version, "state": state }],
            })),
            &["name", "tenant", "require_approval", "limits", "versions"],
        ),
        C::Service {
            action: ServiceAction::List,
        } => (
            "GET",
            format!("/admin/tenants/{}/services", seg(tenant)),
            None,
            &["name", "require_approval", "limits", "versions"],
        ),
        C::Service {
            action: ServiceAction::Show { name },
        } => (
            "GET",
            format!("/admin/tenants/{}/services/{}", seg(tenant), seg(name)),
            None,
            &["name", "require_approval", "limits", "versions"],
        ),
        C::Service {
            action:
                ServiceAction::Update {
                    name,
                    require_approval,
                    no_limits,
                    limits,
                },
        } => {
            let mut body = json!({});
            if let Some(r) = require_approval {
                body["require_approval"] = json!(r);
            }
            limits.patch(*no_limits, &mut body)?;
            (
                "PATCH",
                format!("/admin/tenants/{}/services/{}", seg(tenant), seg(name)),
                Some(body),
                &["name", "require_approval", "limits", "versions"],
            )
        }
        C::Service {
            action: ServiceAction::Delete { name },
        } => (
            "DELETE",
            format!("/admin/tenants/{}/services/{}", seg(tenant), seg(name)),
            None,
            &["deleted"],
        ),
        C::Service {
            action:
                ServiceAction::Version {
                    service,
                    version,
                    state,
                    sunset,
                },
        } => (
            "PUT",
            format!(
                "/admin/tenants/{}/services/{}/versions/{}",
                seg(tenant),
                seg(service),
                seg(version)
            ),
            Some(match sunset {
                Some(ms) => json!({ "state": state, "sunset_ms": ms }),
                None => json!({ "state": state }),
            }),
            &["name", "versions"],
        ),
        C::Consumer {
            action: ConsumerAction::Create { name, limits },
        } => (
            "POST",
            format!("/admin/tenants/{}/consumers", seg(tenant)),
            Some(json!({ "name": name, "limits": limits.to_json() })),
            &["tenant", "name", "limits"],
        ),
        C::Consumer {
            action: ConsumerAction::Show { name },
        } => (
            "GET",
            format!("/admin/tenants/{}/consumers/{}", seg(tenant), seg(name)),
            None,
            &["name", "limits"],
        ),
        C::Consumer {
            action:
                ConsumerAction::Update {
                    name,
                    no_limits,
                    limits,
                },
        } => {
            let mut body = json!({});
            limits.patch(*no_limits, &mut body)?;
            (
                "PATCH",
                format!("/admin/tenants/{}/consumers/{}", seg(tenant), seg(name)),
                Some(body),
                &["name", "limits"],
            )
        }
        C::Consumer {
            action: ConsumerAction::Delete { name },
        } => (
            "DELETE",
            format!("/admin/tenants/{}/consumers/{}", seg(tenant), seg(name)),
            None,
            &["deleted"],
        ),
        C::Consumer {
            action: ConsumerAction::List,
        } => (
            "GET",
            format!("/admin/tenants/{}/consumers", seg(tenant)),
            None,
            &["name", "limits"],
        ),
        C::Key {
            action:
                KeyAction::Issue {
                    consumer,
                    expires_in_s,
                    limits,
                },
        } => {
            let mut body = json!({ "limits": limits.to_json() });
            if let Some(s) = expires_in_s {
                body["expires_in_s"] = json!(s);
            }
            (
                "POST",
                format!(
                    "/admin/tenants/{}/consumers/{}/keys",
                    seg(tenant),
                    seg(consumer)
                ),
                Some(body),
                &["key", "prefix", "consumer", "limits", "expires_ms"],
            )
        }
        C::Key {
            action: KeyAction::List,
        } => (
            "GET",
            format!("/admin/tenants/{}/keys", seg(tenant)),
            None,
            &["prefix", "consumer", "limits", "expires_ms", "revoked_ms"],
        ),
        C::Key {
            action: KeyAction::Revoke { prefix },
        } => (
            "POST",
            format!(
                "/admin/tenants/{}/keys/{}/revoke",
                seg(tenant),
                seg(key_prefix(prefix))
            ),
            None,
            &["prefix", "consumer", "revoked_ms"],
        ),
        C::Key {
            action:
                KeyAction::Update {
                    prefix,
                    expires_in_s,
                    no_expiry,
                    no_limits,
                    limits,
                },
        } => {
            let mut body = json!({});
            limits.patch(*no_limits, &mut body)?;
            if let Some(s) = expires_in_s {
                body["expires_in_s"] = json!(s);
            } else if *no_expiry {
                body["expires_in_s"] = Value::Null;
            }
            (
                "PATCH",
                format!(
                    "/admin/tenants/{}/keys/{}",
                    seg(tenant),
                    seg(key_prefix(prefix))
                ),
                Some(body),
                &["prefix", "consumer", "limits", "expires_ms", "revoked_ms"],
            )
        }
        C::Unsubscribe { id } => (
            "DELETE",
            format!("/admin/tenants/{}/subscriptions/{id}", seg(tenant)),
            None,
            &["deleted"],
        ),
        C::Subscribe { consumer, service } => (
            "POST",
            format!("/admin/tenants/{}/subscriptions", seg(tenant)),
            Some(json!({ "consumer": consumer, "service": service })),
            &["id", "consumer", "service", "state"],
        ),
        C::Subscriptions => (
            "GET",
            format!("/admin/tenants/{}/subscriptions", seg(tenant)),
            None,
            &["id", "consumer", "service", "state"],
        ),
        C::Approve { id } => (
            "POST",
            format!("/admin/tenants/{}/subscriptions/{id}/approve", seg(tenant)),
            None,
            &["id", "consumer", "service", "state"],
        ),
        C::Reject { id } => (
            "POST",
            format!("/admin/tenants/{}/subscriptions/{id}/reject", seg(tenant)),
            None,
            &["id", "consumer", "service", "state"],
        ),
        C::Calllog => ("GET", "/admin/calllog".into(), None, &[]),
        C::Prune { older_than } => (
            "POST",
            match older_than {
                Some(age) => format!("/admin/calllog/prune?older_than={}", query_value(age)),
                None => "/admin/calllog/prune".into(),
            },
            None,
            &["pruned", "before_ms"],
        ),
        C::Stats { since, bucket, top } => {
            let base = match args.tenant.as_deref() {
                Some(t) => format!("/admin/tenants/{}/stats", seg(t)),
                None => "/admin/stats".into(),
            };
            let top = top.map(|n| format!("&top={n}")).unwrap_or_default();
            (
                "GET",
                format!(
                    "{base}?since={}&bucket={}{top}",
                    query_value(since),
                    query_value(bucket)
                ),
                None,
                &[],
            )
        }
    };
    let url = format!("{}{path}", args.url.trim_end_matches('/'));
    let client = reqwest::Client::new();
    let mut req = client
        .request(reqwest::Method::from_bytes(method.as_bytes())?, &url)
        .bearer_auth(token);
    if let Some(b) = &body {
        req = req.json(b);
    }
    let resp = req.send().await.with_context(|| {
        format!("cannot reach the admin API at {url} (set --url or HOLDFAST_ADMIN_URL)")
    })?;
    let mut value = answer_json(resp).await?;
    // Lists come a page at a time (the API's default page is 1000): fetch them all.
    if method == "GET" && !path.contains('?') {
        if let Value::Array(items) = &mut value {
            let mut last = items.len();
            while last == LIST_PAGE {
                let page_url = format!("{url}?limit={LIST_PAGE}&offset={}", items.len());
                let resp = client
                    .get(&page_url)
                    .bearer_auth(token)
                    .send()
                    .await
                    .with_context(|| format!("cannot reach the admin API at {page_url}"))?;
                let Value::Array(more) = answer_json(resp).await? else {
                    break;
                };
                last = more.len();
                items.extend(more);
            }
        }
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&value)?);
    } else if matches!(args.command, C::Stats { .. }) {
        print_stats(&value);
    } else if matches!(args.command, C::Calllog) {
        print_calllog(&value);
    } else {
        print_table(&value, columns);
        if let Some(key) = value["key"].as_str() {
            eprintln!(
                "\nThe key is shown only now: store it safely. Prefix: {}",
                &key[..key.len().min(11)]
            );
        }
    }
    Ok(0)
}

/// The admin API's default (and the CLI's) page size for lists.
const LIST_PAGE: usize = 1000;

/// The JSON of an admin API answer; an error status becomes an error with the API's message.
async fn answer_json(resp: reqwest::Response) -> anyhow::Result<Value> {
    let status = resp.status();
    let text = resp.text().await?;
    let value: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
    if !status.is_success() {
        let msg = value["error"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| value.to_string());
        bail!("admin API answered {status}: {}", for_cli(&msg));
    }
    Ok(value)
}

/// An API message in the CLI's terms: `?force=true` is the CLI's `--force`.
fn for_cli(message: &str) -> String {
    message.replace("with ?force=true", "with --force")
}

/// Columns holding a time (epoch ms): shown as RFC 3339 UTC in tables, under a header
/// without the `_ms` (the JSON keeps the raw value).
const TIME_COLUMNS: &[&str] = &[
    "start_ms",
    "created_ms",
    "decided_ms",
    "expires_ms",
    "revoked_ms",
    "before_ms",
];

/// Columns holding a duration in ms.
const LATENCY_COLUMNS: &[&str] = &["p50_ms", "p95_ms", "p99_ms", "total_ms"];

fn header(column: &str) -> String {
    let name = if TIME_COLUMNS.contains(&column) {
        column.trim_end_matches("_ms")
    } else {
        column
    };
    name.to_uppercase()
}

/// A table cell of column `column`.
fn column_cell(column: &str, v: &Value) -> String {
    match v {
        Value::Number(n) if TIME_COLUMNS.contains(&column) => match n.as_i64() {
            Some(ms) => rfc3339_ms(ms),
            None => n.to_string(),
        },
        Value::Number(n) if LATENCY_COLUMNS.contains(&column) => {
            n.as_f64().map_or_else(|| n.to_string(), latency)
        }
        Value::Number(n) if column == "cost_usd" => n.as_f64().map_or_else(|| n.to_string(), cost),
        other => cell(other),
    }
}

/// A latency in ms with enough digits for sub-millisecond values: `0.042`, `3.18`, `12.4`,
/// `250`.
fn latency(ms: f64) -> String {
    let a = ms.abs();
    if a >= 100.0 {
        format!("{ms:.0}")
    } else if a >= 10.0 {
        format!("{ms:.1}")
    } else if a >= 1.0 {
        format!("{ms:.2}")
    } else if a == 0.0 {
        "0".into()
    } else {
        format!("{ms:.3}")
    }
}

/// A cost in USD to 6 significant digits, without trailing zeros: `0.0006`, `12.3457`.
fn cost(usd: f64) -> String {
    if usd == 0.0 || !usd.is_finite() {
        return format!("{usd}");
    }
    let magnitude = usd.abs().log10().floor() as i32;
    let decimals = (5 - magnitude).clamp(0, 12) as usize;
    let text = format!("{usd:.decimals$}");
    if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        text
    }
}

/// `--sunset`: a date (`2027-06-30`, midnight UTC) or an RFC 3339 time, as epoch ms.
fn parse_sunset(text: &str) -> Result<i64, String> {
    use time::format_description::well_known::Rfc3339;
    let at = match time::OffsetDateTime::parse(text, &Rfc3339) {
        Ok(at) => at,
        Err(_) => time::Date::parse(
            text,
            time::macros::format_description!("[year]-[month]-[day]"),
        )
        .map_err(|_| {
            format!("`{text}` is not a date: write `2027-06-30` or `2027-06-30T12:00:00Z`")
        })?
        .midnight()
        .assume_utc(),
    };
    let ms = at.unix_timestamp_nanos() / 1_000_000;
    if !(0..=i128::from(holdfast_store::MAX_SUNSET_MS)).contains(&ms) {
        return Err(format!("`{text}` is not between 1970 and 9999"));
    }
    Ok(ms as i64)
}

/// Epoch milliseconds as RFC 3339 UTC: `2024-05-01T12:00:00Z` (`.123` when not a whole
/// second).
fn rfc3339_ms(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let millis = ms.rem_euclid(1000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Days to a civil date (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let (h, m, s) = (rem / 3600, rem % 3600 / 60, rem % 60);
    let frac = if millis == 0 {
        String::new()
    } else {
        format!(".{millis:03}")
    };
    format!("{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}{frac}Z")
}

fn cell(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        Value::Array(a) if a.iter().all(|x| x.get("version").is_some()) => a
            .iter()
            .map(|x| {
                let sunset = match x.get("sunset_ms").and_then(Value::as_i64) {
                    Some(ms) => format!(" (sunset {})", rfc3339_ms(ms)),
                    None => String::new(),
                };
                format!(
                    "{}:{}{sunset}",
                    x["version"].as_str().unwrap_or("?"),
                    x["state"].as_str().unwrap_or("?")
                )
            })
            .collect::<Vec<_>>()
            .join(","),
        Value::Object(map) => {
            let pairs: Vec<String> = map
                .iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| match v {
                    Value::Object(_) => format!("{k}=({})", cell(v)),
                    _ => format!("{k}={}", cell(v)),
                })
                .collect();
            if pairs.is_empty() {
                "-".into()
            } else {
                pairs.join(" ")
            }
        }
        other => other.to_string(),
    }
}

fn print_table(value: &Value, columns: &[&str]) {
    let rows: Vec<&Value> = match value {
        Value::Array(a) => a.iter().collect(),
        other => vec![other],
    };
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| columns.iter().map(|c| column_cell(c, &r[*c])).collect())
        .collect();
    let widths: Vec<usize> = columns
        .iter()
        .enumerate()
        .map(|(i, c)| {
            cells
                .iter()
                .map(|r| r[i].len())
                .chain([c.len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |vals: Vec<String>| {
        vals.iter()
            .zip(&widths)
            .map(|(v, w)| format!("{v:<w$}"))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_string()
    };
    println!("{}", line(columns.iter().map(|c| header(c)).collect()));
    for r in cells {
        println!("{}", line(r));
    }
}

fn print_stats(v: &Value) {
    let f = |k: &str| v[k].as_f64().unwrap_or(0.0);
    println!(
        "calls {}  errors {} ({:.2}%)  p50 {} ms  p95 {} ms  p99 {} ms",
        v["calls"],
        v["errors"],
        f("error_rate") * 100.0,
        latency(f("p50_ms")),
        latency(f("p95_ms")),
        latency(f("p99_ms"))
    );
    let buckets: Vec<Value> = v["buckets"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .map(|mut b| {
            b["error_rate"] = json!(format!(
                "{:.2}%",
                b["error_rate"].as_f64().unwrap_or(0.0) * 100.0
            ));
            b
        })
        .collect();
    println!();
    print_table(
        &Value::Array(buckets),
        &[
            "start_ms",
            "calls",
            "errors",
            "error_rate",
            "p50_ms",
            "p95_ms",
            "p99_ms",
        ],
    );
    for (title, key) in [
        ("top consumers", "top_consumers"),
        ("top services", "top_services"),
        ("top routes", "top_routes"),
    ] {
        println!("\n{title}:");
        print_table(&v[key], &["name", "calls"]);
    }
    println!("\nresets by class:");
    print_counts(&v["resets_by_class"], "class");
    println!("\ntokens and cost:");
    print_table(
        &v["usage"],
        &["consumer", "model", "calls", "tokens", "cost_usd"],
    );
    println!("\ncalls by node:");
    print_counts(&v["calls_by_node"], "node");
    // Only super admins see the writer's counters.
    if !v["call_log"].is_null() {
        println!("\ncall log writer: {}", cell(&v["call_log"]));
    }
}

/// `GET /admin/calllog`: what is stored, the writer's counters and the cache's state.
fn print_calllog(v: &Value) {
    println!("node {}  stored calls {}", cell(&v["node"]), v["stored"]);
    println!("\ncall log writer:");
    print_table(
        &v["writer"],
        &[
            "queued",
            "written",
            "overflow",
            "write_failures",
            "pruned",
            "backlog",
            "backlog_ms",
            "last_write_ms",
            "behind",
        ],
    );
    println!("\nmanagement cache:");
    print_table(
        &v["cache"],
        &[
            "listening",
            "notified_reloads",
            "polled_reloads",
            "listener_restarts",
        ],
    );
}

/// A JSON object of counts (`{"upstream_timeout": 3, ...}`) as a two-column table, largest
/// first; `(none)` when it is empty.
fn print_counts(v: &Value, key_header: &str) {
    let rows = count_rows(v, key_header);
    if rows.is_empty() {
        println!("(none)");
    } else {
        print_table(&Value::Array(rows), &[key_header, "calls"]);
    }
}

/// The rows of [`print_counts`]: `{key_header: name, "calls": n}`, largest count first.
fn count_rows(v: &Value, key_header: &str) -> Vec<Value> {
    let mut rows: Vec<(&String, &Value)> = v
        .as_object()
        .map(|m| m.iter().collect())
        .unwrap_or_default();
    let n = |v: &Value| v.as_f64().unwrap_or(0.0);
    rows.sort_by(|a, b| n(b.1).total_cmp(&n(a.1)).then_with(|| a.0.cmp(b.0)));
    rows.into_iter()
        .map(|(k, n)| json!({ key_header: k, "calls": n }))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn objects_in_cells_and_count_tables_are_readable() {
        assert_eq!(
            cell(&json!({"rps": 10, "rpm": null, "tpm": 600})),
            "rps=10 tpm=600"
        );
        assert_eq!(cell(&json!({"rps": null})), "-");
        assert_eq!(
            cell(&json!({"tenant": "a", "removed": {"services": 2}})),
            "removed=(services=2) tenant=a"
        );
        let rows = count_rows(&json!({"b": 1, "a": 5, "c": 1}), "class");
        assert_eq!(
            rows,
            vec![
                json!({"class": "a", "calls": 5}),
                json!({"class": "b", "calls": 1}),
                json!({"class": "c", "calls": 1}),
            ]
        );
        assert!(count_rows(&json!({}), "node").is_empty());
        assert!(count_rows(&Value::Null, "node").is_empty());
    }

    #[test]
    fn costs_latencies_and_times_are_readable() {
        assert_eq!(cost(0.0006000000000000001), "0.0006");
        assert_eq!(cost(12.345_678_9), "12.3457");
        assert_eq!(cost(0.000_000_123_456_78), "0.000000123457");
        assert_eq!(cost(1500.0), "1500");
        assert_eq!(cost(0.0), "0");
        assert_eq!(latency(0.042), "0.042");
        assert_eq!(latency(0.0), "0");
        assert_eq!(latency(3.18), "3.18");
        assert_eq!(latency(12.44), "12.4");
        assert_eq!(latency(250.4), "250");
        assert_eq!(rfc3339_ms(0), "1970-01-01T00:00:00Z");
        assert_eq!(
            for_cli("tenant `b` still has 1 service(s): delete them first, or delete with ?force=true to delete them too"),
            "tenant `b` still has 1 service(s): delete them first, or delete with --force to delete them too"
        );
        assert_eq!(parse_sunset("2024-05-01"), Ok(1_714_521_600_000));
        assert_eq!(parse_sunset("2024-05-01T12:00:00Z"), Ok(1_714_564_800_000));
        assert_eq!(
            parse_sunset("2024-05-01T14:00:00+02:00"),
            Ok(1_714_564_800_000)
        );
        assert!(parse_sunset("1969-12-31").is_err());
        assert!(parse_sunset("next tuesday")
            .unwrap_err()
            .contains("not a date"));
        assert_eq!(rfc3339_ms(1_714_564_800_000), "2024-05-01T12:00:00Z");
        assert_eq!(rfc3339_ms(951_782_400_123), "2000-02-29T00:00:00.123Z");
        assert_eq!(rfc3339_ms(-1000), "1969-12-31T23:59:59Z");
        assert_eq!(header("start_ms"), "START");
        assert_eq!(header("p50_ms"), "P50_MS");
        // An empty stats bucket has null percentiles: a dash, not 0.
        assert_eq!(column_cell("p50_ms", &Value::Null), "-");
        assert_eq!(
            column_cell("cost_usd", &json!(0.0006000000000000001)),
            "0.0006"
        );
        assert_eq!(query_value("7d"), "7d");
        assert_eq!(query_value("1 h&x"), "1%20h%26x");
    }
}
