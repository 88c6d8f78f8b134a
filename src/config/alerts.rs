//! `[alerts]`: the evaluation interval, the SMTP server, the Salesforce notification type and
//! recipients, and the rules (see `crate::alerts`). Checked like the rest of the
//! configuration: an error names the key.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{ConfigError, RawSecret, bad, secret_text};
use crate::alerts::{AlertsConfig, Rule, RuleKind, SalesforceTarget, Security, SmtpSettings};

/// `[alerts]`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawAlerts {
    /// Seconds between evaluations.
    pub interval_s: u64,
    /// Also send a notice when a condition clears.
    pub notify_resolved: bool,
    pub smtp: Option<RawSmtp>,
    pub salesforce: Option<RawAlertsSalesforce>,
    pub rules: Vec<RawAlertRule>,
}

impl Default for RawAlerts {
    fn default() -> RawAlerts {
        RawAlerts {
            interval_s: 60,
            notify_resolved: false,
            smtp: None,
            salesforce: None,
            rules: Vec::new(),
        }
    }
}

/// `[alerts.smtp]`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSmtp {
    pub host: String,
    /// Default 587 (submission).
    pub port: Option<u16>,
    /// `starttls` (default) or `plain` (a local relay; no credentials beyond loopback).
    pub security: Option<String>,
    pub username: Option<String>,
    pub password: Option<RawSecret>,
    pub from: String,
    pub to: Vec<String>,
    /// PEM CA certificates to trust instead of the platform's roots (a private relay).
    pub ca_file: Option<PathBuf>,
    /// The whole exchange's time limit (default 30000).
    pub timeout_ms: Option<u64>,
    /// The `EHLO` name (default `localhost`).
    pub helo_name: Option<String>,
}

/// `[alerts.salesforce]`: custom notifications through `[sync.salesforce]`'s connection.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAlertsSalesforce {
    /// The `CustomNotificationType` id (`0ML…`, Setup → Custom Notifications).
    pub notification_type_id: String,
    /// Users, groups or queues (at most 500).
    pub recipient_ids: Vec<String>,
    /// The record a notification opens (default: none).
    pub target_id: Option<String>,
}

/// `[[alerts.rules]]`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAlertRule {
    /// Default: the kind (names must be unique).
    pub name: Option<String>,
    pub kind: String,
    /// Fires above this: a count (default 0), or seconds for `sync_lag` and `cursor_stale`
    /// (required).
    pub threshold: Option<i64>,
    /// Only dead jobs / webhook failures of the last `window_s` seconds count.
    pub window_s: Option<u64>,
    /// Evaluate at most this often (default: every interval; `chain_verification`: 3600).
    pub every_s: Option<u64>,
    /// Notices per hour for this rule at most (default 10).
    pub max_per_hour: Option<u32>,
}

fn is_sf_id(s: &str) -> bool {
    (s.len() == 15 || s.len() == 18) && s.bytes().all(|b| b.is_ascii_alphanumeric())
}

fn is_loopback(host: &str) -> bool {
    host == "localhost"
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

fn check_address(a: &str, key: &str) -> Result<(), ConfigError> {
    let bare = match (a.find('<'), a.rfind('>')) {
        (Some(i), Some(j)) if i < j => &a[i + 1..j],
        _ => a.trim(),
    };
    let ok = bare
        .split_once('@')
        .is_some_and(|(l, d)| !l.is_empty() && !d.is_empty())
        && !bare.contains(char::is_whitespace)
        && !a.contains(['\r', '\n']);
    if ok {
        Ok(())
    } else {
        Err(bad(key, format!("{a:?} is not an email address")))
    }
}

fn smtp_settings(s: &RawSmtp) -> Result<SmtpSettings, ConfigError> {
    let host = s.host.trim();
    if host.is_empty() || host.contains(char::is_whitespace) {
        return Err(bad("alerts.smtp.host", "must be a host name or address"));
    }
    let security = match s.security.as_deref().unwrap_or("starttls") {
        "starttls" => Security::StartTls,
        "plain" => Security::Plain,
        other => {
            return Err(bad(
                "alerts.smtp.security",
                format!("must be \"starttls\" or \"plain\", got {other:?}"),
            ));
        }
    };
    let port = s.port.unwrap_or(587);
    if port == 0 {
        return Err(bad("alerts.smtp.port", "must be 1 to 65535"));
    }
    check_address(&s.from, "alerts.smtp.from")?;
    if s.to.is_empty() {
        return Err(bad("alerts.smtp.to", "needs at least one address"));
    }
    for (i, a) in s.to.iter().enumerate() {
        check_address(a, &format!("alerts.smtp.to[{i}]"))?;
    }
    let password = match (&s.username, &s.password) {
        (Some(_), Some(p)) => Some(Arc::new(secret_text(p, "alerts.smtp.password")?)),
        (None, None) => None,
        (Some(_), None) => return Err(bad("alerts.smtp.password", "is required with `username`")),
        (None, Some(_)) => return Err(bad("alerts.smtp.username", "is required with `password`")),
    };
    if password.is_some() && security == Security::Plain && !is_loopback(host) {
        return Err(bad(
            "alerts.smtp.password",
            "is sent in clear with security = \"plain\": use \"starttls\" (plain only to a loopback relay)",
        ));
    }
    if s.ca_file.is_some() && security == Security::Plain {
        return Err(bad(
            "alerts.smtp.ca_file",
            "applies to security = \"starttls\" only",
        ));
    }
    let tls = match security {
        Security::Plain => None,
        Security::StartTls => {
            let pem = match &s.ca_file {
                Some(f) => Some(std::fs::read(f).map_err(|e| {
                    bad(
                        "alerts.smtp.ca_file",
                        format!("cannot read {}: {e}", f.display()),
                    )
                })?),
                None => None,
            };
            Some(
                crate::alerts::smtp::tls_config(pem.as_deref()).map_err(|e| {
                    bad(
                        if pem.is_some() {
                            "alerts.smtp.ca_file"
                        } else {
                            "alerts.smtp"
                        },
                        e,
                    )
                })?,
            )
        }
    };
    let timeout_ms = s.timeout_ms.unwrap_or(30_000);
    if timeout_ms < 100 {
        return Err(bad("alerts.smtp.timeout_ms", "must be at least 100"));
    }
    let helo_name = s.helo_name.clone().unwrap_or_else(|| "localhost".into());
    if helo_name.is_empty()
        || !helo_name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || ".-[]:".contains(c))
    {
        return Err(bad("alerts.smtp.helo_name", "must be a host name"));
    }
    Ok(SmtpSettings {
        host: host.to_owned(),
        port,
        security,
        username: s.username.clone(),
        password,
        from: s.from.trim().to_owned(),
        to: s.to.iter().map(|t| t.trim().to_owned()).collect(),
        helo_name,
        timeout: Duration::from_millis(timeout_ms),
        tls,
    })
}

fn salesforce_target(s: &RawAlertsSalesforce) -> Result<SalesforceTarget, ConfigError> {
    let t = s.notification_type_id.trim();
    if !is_sf_id(t) || !t.starts_with("0ML") {
        return Err(bad(
            "alerts.salesforce.notification_type_id",
            "must be a CustomNotificationType id (15 or 18 characters, starting 0ML)",
        ));
    }
    if s.recipient_ids.is_empty() || s.recipient_ids.len() > 500 {
        return Err(bad("alerts.salesforce.recipient_ids", "needs 1 to 500 ids"));
    }
    for (i, r) in s.recipient_ids.iter().enumerate() {
        if !is_sf_id(r) {
            return Err(bad(
                &format!("alerts.salesforce.recipient_ids[{i}]"),
                format!("{r:?} is not a Salesforce id"),
            ));
        }
    }
    let target_id = match &s.target_id {
        Some(t) if is_sf_id(t) => t.clone(),
        Some(t) => {
            return Err(bad(
                "alerts.salesforce.target_id",
                format!("{t:?} is not a Salesforce id"),
            ));
        }
        None => sync::salesforce::notifications::NO_TARGET_ID.to_owned(),
    };
    Ok(SalesforceTarget {
        notification_type_id: t.to_owned(),
        recipient_ids: s.recipient_ids.clone(),
        target_id,
    })
}

/// Checks `[alerts]`; `salesforce_connected` says whether `[sync.salesforce]` has a client.
pub(super) fn alerts_settings(
    raw: Option<&RawAlerts>,
    salesforce_connected: bool,
) -> Result<Option<AlertsConfig>, ConfigError> {
    let Some(raw) = raw else {
        return Ok(None);
    };
    if raw.interval_s == 0 {
        return Err(bad("alerts.interval_s", "must be at least 1"));
    }
    let smtp = raw.smtp.as_ref().map(smtp_settings).transpose()?;
    let salesforce = raw.salesforce.as_ref().map(salesforce_target).transpose()?;
    if salesforce.is_some() && !salesforce_connected {
        return Err(bad(
            "alerts.salesforce",
            "needs [sync.salesforce] with `auth` (notifications go through that connection)",
        ));
    }
    if !raw.rules.is_empty() && smtp.is_none() && salesforce.is_none() {
        return Err(bad(
            "alerts",
            "rules need somewhere to send: [alerts.smtp] or [alerts.salesforce]",
        ));
    }
    let mut rules: Vec<Rule> = Vec::new();
    for (i, r) in raw.rules.iter().enumerate() {
        let k = |f: &str| format!("alerts.rules[{i}].{f}");
        let kind = RuleKind::parse(&r.kind).ok_or_else(|| {
            bad(
                &k("kind"),
                format!(
                    "{:?} is not one of {}",
                    r.kind,
                    RuleKind::ALL.map(RuleKind::as_str).join(", ")
                ),
            )
        })?;
        let name = r.name.clone().unwrap_or_else(|| kind.as_str().to_owned());
        if name.is_empty()
            || name.len() > 100
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            return Err(bad(
                &k("name"),
                "letters, digits, `_` and `-` only (1 to 100)",
            ));
        }
        if rules.iter().any(|o| o.name == name) {
            return Err(bad(
                &k("name"),
                format!(
                    "{name:?} is used by another rule (give each rule of the same kind a name)"
                ),
            ));
        }
        let threshold = match (r.threshold, kind.needs_threshold()) {
            (Some(t), _) if t < 0 => return Err(bad(&k("threshold"), "must be 0 or more")),
            (Some(t), _) => t,
            (None, true) => {
                return Err(bad(
                    &k("threshold"),
                    format!("is required for {} (seconds)", kind.as_str()),
                ));
            }
            (None, false) => 0,
        };
        if r.window_s == Some(0) {
            return Err(bad(&k("window_s"), "must be at least 1"));
        }
        if r.window_s.is_some() && !matches!(kind, RuleKind::JobDead | RuleKind::WebhookFailures) {
            return Err(bad(
                &k("window_s"),
                "applies to job_dead and webhook_failures only",
            ));
        }
        if r.every_s == Some(0) {
            return Err(bad(&k("every_s"), "must be at least 1"));
        }
        let max_per_hour = r.max_per_hour.unwrap_or(10);
        if max_per_hour == 0 || max_per_hour > 1_000 {
            return Err(bad(&k("max_per_hour"), "must be 1 to 1000"));
        }
        rules.push(Rule {
            name,
            kind,
            threshold,
            window: r.window_s.map(Duration::from_secs),
            every: r.every_s.map(Duration::from_secs),
            max_per_hour,
        });
    }
    Ok(Some(AlertsConfig {
        interval: Duration::from_secs(raw.interval_s),
        notify_resolved: raw.notify_resolved,
        smtp,
        salesforce,
        rules,
    }))
}
