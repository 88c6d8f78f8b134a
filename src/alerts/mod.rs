//! Alerts: rules from `[alerts]` evaluated every `interval_s` by each `cashloop serve`, and a
//! notice per new condition sent by email (SMTP, [`smtp`]) and as a Salesforce custom
//! notification (`actions/standard/customNotificationAction`).
//!
//! Rules ([`RuleKind`]): the error queue above N dead jobs; a job dead (one notice per dead
//! job); sync lag (the oldest due pending job older than T seconds); a cursor not advanced
//! for T seconds; reconciliation exceptions above N (results not `matched` in the latest
//! stored run); webhook deliveries failing (per subscriber, above N); chain verification
//! failed (`Ledger::verify`, on its own slower schedule).
//!
//! Each condition is a (rule, subject) pair — `queue`, `job:42`, `run:7`,
//! `subscriber:erp`, `chain` — kept in `alert_state` ([`store`]):
//! - **Deduplicated**: a notice is sent when the pair starts firing, and not again while
//!   the condition persists; when it clears the pair is resolved (and, with
//!   `notify_resolved`, a "resolved" notice goes out); a recurrence fires anew.
//! - **Once across processes**: sending needs the pair's claim, an UPDATE that one process
//!   wins; each channel is marked as sent, so a retry after a partial failure resends only
//!   the missing channel.
//! - **Rate-limited**: at most `max_per_hour` notices per rule in any hour (slots in
//!   `alert_rate_slots`, taken by a conditional UPDATE); beyond that a notice is suppressed
//!   (logged and recorded, not sent later).
//! - **Retried**: a failed delivery leaves the pair unnotified; the next evaluation tries
//!   again. Errors are logged with the stage and the server's reply, never a password.
//! - **No secrets in alert text**: digit runs that could be card or account numbers are
//!   masked ([`scrub`]) and error texts are cut short.

pub mod rules;
pub mod smtp;
pub mod store;

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use db::Db;
use sync::salesforce::SalesforceClient;
use sync::salesforce::notifications::CustomNotification;

pub use smtp::{Security, SmtpSettings};

/// What a rule watches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RuleKind {
    ErrorQueue,
    JobDead,
    SyncLag,
    CursorStale,
    ReconcileExceptions,
    WebhookFailures,
    ChainVerification,
}

impl RuleKind {
    pub const ALL: [RuleKind; 7] = [
        RuleKind::ErrorQueue,
        RuleKind::JobDead,
        RuleKind::SyncLag,
        RuleKind::CursorStale,
        RuleKind::ReconcileExceptions,
        RuleKind::WebhookFailures,
        RuleKind::ChainVerification,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            RuleKind::ErrorQueue => "error_queue",
            RuleKind::JobDead => "job_dead",
            RuleKind::SyncLag => "sync_lag",
            RuleKind::CursorStale => "cursor_stale",
            RuleKind::ReconcileExceptions => "reconcile_exceptions",
            RuleKind::WebhookFailures => "webhook_failures",
            RuleKind::ChainVerification => "chain_verification",
        }
    }

    pub fn parse(s: &str) -> Option<RuleKind> {
        RuleKind::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// Whether `threshold` means something for this kind (and must be given).
    pub const fn needs_threshold(self) -> bool {
        matches!(self, RuleKind::SyncLag | RuleKind::CursorStale)
    }
}

/// One configured rule.
#[derive(Clone, Debug)]
pub struct Rule {
    /// Unique among the rules; the key alert state is kept under.
    pub name: String,
    pub kind: RuleKind,
    /// Fires when the measure is above this (a count, or seconds for lag and cursors).
    pub threshold: i64,
    /// Only what happened within this window counts (dead jobs, webhook failures).
    pub window: Option<Duration>,
    /// Evaluated at most this often (default: every interval; chain verification: hourly).
    pub every: Option<Duration>,
    pub max_per_hour: u32,
}

/// Where Salesforce notifications go.
#[derive(Clone, Debug)]
pub struct SalesforceTarget {
    pub notification_type_id: String,
    pub recipient_ids: Vec<String>,
    /// The record a notification opens; `NO_TARGET_ID` for none.
    pub target_id: String,
}

/// `[alerts]`, checked.
#[derive(Clone, Debug)]
pub struct AlertsConfig {
    pub interval: Duration,
    pub notify_resolved: bool,
    pub smtp: Option<SmtpSettings>,
    pub salesforce: Option<SalesforceTarget>,
    pub rules: Vec<Rule>,
}

/// A condition found by a rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    pub subject: String,
    pub title: String,
    pub details: Vec<String>,
}

/// What one evaluation did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    pub firing: u32,
    pub sent: u32,
    pub suppressed: u32,
    pub failed: u32,
    pub resolved: u32,
}

/// Evaluates the rules and sends notices. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Alerter {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    db: Db,
    ledger: Option<ledger::Ledger>,
    config: AlertsConfig,
    salesforce: Option<SalesforceClient>,
    instance: String,
    last_run: Mutex<HashMap<String, Instant>>,
    slots_ready: Mutex<BTreeSet<String>>,
}

/// How long a claim keeps other processes off a notice (longer than any send takes).
const CLAIM_MS: i64 = 120_000;
/// Chain verification reads the whole ledger: hourly unless `every_s` says otherwise.
const CHAIN_DEFAULT_EVERY: Duration = Duration::from_secs(3_600);

impl Alerter {
    /// `salesforce` is the connection notifications go through (`[sync.salesforce]`).
    pub fn new(db: Db, config: AlertsConfig, salesforce: Option<SalesforceClient>) -> Alerter {
        Alerter::build(db, None, config, salesforce, default_instance())
    }

    fn build(
        db: Db,
        ledger: Option<ledger::Ledger>,
        config: AlertsConfig,
        salesforce: Option<SalesforceClient>,
        instance: String,
    ) -> Alerter {
        Alerter {
            inner: Arc::new(Inner {
                db,
                ledger,
                config,
                salesforce,
                instance,
                last_run: Mutex::new(HashMap::new()),
                slots_ready: Mutex::new(BTreeSet::new()),
            }),
        }
    }

    /// The ledger chain verification runs on.
    pub fn with_ledger(self, ledger: ledger::Ledger) -> Alerter {
        let i = &self.inner;
        Alerter::build(
            i.db.clone(),
            Some(ledger),
            i.config.clone(),
            i.salesforce.clone(),
            i.instance.clone(),
        )
    }

    /// The name this process records claims and log rows under.
    pub fn with_instance(self, instance: &str) -> Alerter {
        let i = &self.inner;
        Alerter::build(
            i.db.clone(),
            i.ledger.clone(),
            i.config.clone(),
            i.salesforce.clone(),
            instance.to_owned(),
        )
    }

    /// Evaluates every rule due now, sends what is new, resolves what cleared.
    pub async fn evaluate_once(&self) -> Report {
        let mut report = Report::default();
        for rule in &self.inner.config.rules {
            if !self.due(rule) {
                continue;
            }
            let evaluation = match rules::evaluate(&self.inner.db, self.inner.ledger.as_ref(), rule)
                .await
            {
                Ok(f) => f,
                Err(e) => {
                    tracing::warn!(rule = %rule.name, error = %e, "alert rule evaluation failed");
                    continue;
                }
            };
            if let Err(e) = self
                .handle(rule, evaluation.findings, evaluation.complete, &mut report)
                .await
            {
                tracing::warn!(rule = %rule.name, error = %e, "alert state update failed");
            }
        }
        report
    }

    fn due(&self, rule: &Rule) -> bool {
        let every = match (rule.every, rule.kind) {
            (Some(e), _) => e,
            (None, RuleKind::ChainVerification) => CHAIN_DEFAULT_EVERY,
            (None, _) => return true,
        };
        let mut last = self
            .inner
            .last_run
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        match last.get(&rule.name) {
            Some(t) if now.duration_since(*t) < every => false,
            _ => {
                last.insert(rule.name.clone(), now);
                true
            }
        }
    }

    async fn handle(
        &self,
        rule: &Rule,
        findings: Vec<Finding>,
        complete: bool,
        report: &mut Report,
    ) -> Result<(), sqlx::Error> {
        let db = &self.inner.db;
        let me = &self.inner.instance;
        let ready = self
            .inner
            .slots_ready
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(&rule.name);
        if !ready {
            store::ensure_slots(db, &rule.name, rule.max_per_hour).await?;
            self.inner
                .slots_ready
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(rule.name.clone());
        }
        let present: BTreeSet<String> = findings.iter().map(|f| f.subject.clone()).collect();
        for f in &findings {
            report.firing += 1;
            let now = now_ms();
            store::observe(db, &rule.name, &f.subject, &scrub(&f.title), now).await?;
            if !store::claim(db, &rule.name, &f.subject, me, now, now + CLAIM_MS).await? {
                continue;
            }
            let state = store::sent_channels(db, &rule.name, &f.subject).await?;
            let mut slot = None;
            if state.email_sent_ms.is_none() && state.salesforce_sent_ms.is_none() {
                match store::take_slot(db, &rule.name, rule.max_per_hour, now).await? {
                    Some(s) => slot = Some(s),
                    None => {
                        store::suppress(db, &rule.name, &f.subject, me, now).await?;
                        tracing::warn!(
                            rule = %rule.name,
                            subject = %f.subject,
                            max_per_hour = rule.max_per_hour,
                            "alert suppressed by the rate limit"
                        );
                        report.suppressed += 1;
                        continue;
                    }
                }
            }
            let outcome = self.deliver(rule, f, &state, false).await;
            let now = now_ms();
            if outcome.email_sent {
                store::mark_sent(db, &rule.name, &f.subject, store::Channel::Email, now).await?;
            }
            if outcome.salesforce_sent {
                store::mark_sent(db, &rule.name, &f.subject, store::Channel::Salesforce, now)
                    .await?;
            }
            if outcome.errors.is_empty() {
                store::finish(db, &rule.name, &f.subject, me, now).await?;
                tracing::info!(rule = %rule.name, subject = %f.subject, "alert sent");
                report.sent += 1;
            } else {
                let error = outcome.errors.join("; ");
                if let Some(s) = slot.filter(|_| !outcome.email_sent && !outcome.salesforce_sent) {
                    store::release_slot(db, &rule.name, s).await?;
                }
                store::fail(db, &rule.name, &f.subject, me, &error, now).await?;
                tracing::warn!(
                    rule = %rule.name,
                    subject = %f.subject,
                    error = %error,
                    "alert delivery failed; retried at the next evaluation"
                );
                report.failed += 1;
            }
        }
        // Pairs that no longer fire are resolved (by one process: the UPDATE decides), unless
        // the rule's list was capped.
        if !complete {
            return Ok(());
        }
        for (subject, title, outcome) in store::firing(db, &rule.name).await? {
            if present.contains(&subject) {
                continue;
            }
            if !store::resolve(db, &rule.name, &subject, me, now_ms()).await? {
                continue;
            }
            report.resolved += 1;
            tracing::info!(rule = %rule.name, subject = %subject, "alert resolved");
            if self.inner.config.notify_resolved && outcome.as_deref() == Some("sent") {
                let f = Finding {
                    subject: subject.clone(),
                    title,
                    details: vec!["The condition has cleared.".into()],
                };
                let out = self
                    .deliver(rule, &f, &store::SentChannels::default(), true)
                    .await;
                if !out.errors.is_empty() {
                    tracing::warn!(
                        rule = %rule.name,
                        subject = %subject,
                        error = %out.errors.join("; "),
                        "resolved notice not delivered (not retried)"
                    );
                }
            }
        }
        Ok(())
    }

    async fn deliver(
        &self,
        rule: &Rule,
        f: &Finding,
        already: &store::SentChannels,
        resolved: bool,
    ) -> Delivery {
        let mut out = Delivery::default();
        let title = scrub(&if resolved {
            format!("Resolved: {}", f.title)
        } else {
            f.title.clone()
        });
        let body = scrub(&self.body(rule, f));
        if let Some(smtp) = &self.inner.config.smtp
            && already.email_sent_ms.is_none()
        {
            let message = smtp::Message {
                subject: format!("[cashloop] {title}"),
                body: body.clone(),
                id: format!(
                    "alert.{}.{}.{}",
                    now_ms(),
                    safe_id(&rule.name),
                    safe_id(&f.subject)
                ),
            };
            match smtp::send(smtp, &message).await {
                Ok(()) => out.email_sent = true,
                Err(e) => out.errors.push(format!("email: {e}")),
            }
        }
        if let Some(target) = &self.inner.config.salesforce
            && already.salesforce_sent_ms.is_none()
        {
            match &self.inner.salesforce {
                None => out
                    .errors
                    .push("salesforce: no Salesforce connection configured".into()),
                Some(client) => {
                    let n = CustomNotification {
                        custom_notif_type_id: target.notification_type_id.clone(),
                        recipient_ids: target.recipient_ids.clone(),
                        title: format!("cashloop: {title}"),
                        body: body.clone(),
                        target_id: target.target_id.clone(),
                    }
                    .truncated();
                    match client.send_custom_notification(&n).await {
                        Ok(()) => out.salesforce_sent = true,
                        Err(e) => out
                            .errors
                            .push(format!("salesforce: {}", cut(&e.to_string(), 500))),
                    }
                }
            }
        }
        out
    }

    fn body(&self, rule: &Rule, f: &Finding) -> String {
        let mut b = String::new();
        b.push_str(&f.title);
        b.push_str("\n\n");
        for d in &f.details {
            b.push_str(d);
            b.push('\n');
        }
        b.push_str(&format!(
            "\nRule: {} ({}), subject: {}\nSeen by {} at {}.\nSent once while the condition lasts; at most {} notices per hour for this rule.\n",
            rule.name,
            rule.kind.as_str(),
            f.subject,
            self.inner.instance,
            chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            rule.max_per_hour
        ));
        b
    }

    /// Evaluates every `interval` until `stop` turns true.
    pub async fn run(self, mut stop: tokio::sync::watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(self.inner.config.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tracing::info!(
            rules = self.inner.config.rules.len(),
            interval_s = self.inner.config.interval.as_secs(),
            "alerts: evaluating"
        );
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    let r = self.evaluate_once().await;
                    if r.sent + r.failed + r.suppressed + r.resolved > 0 {
                        tracing::debug!(?r, "alerts evaluated");
                    }
                }
                changed = stop.changed() => {
                    if changed.is_err() || *stop.borrow() {
                        return;
                    }
                }
            }
        }
    }
}

#[derive(Debug, Default)]
struct Delivery {
    email_sent: bool,
    salesforce_sent: bool,
    errors: Vec<String>,
}

/// Starts the evaluator for `cashloop serve` when `[alerts]` is configured.
pub fn spawn(
    config: &crate::config::Config,
    db: &Db,
    ledger: &ledger::Ledger,
    stop: tokio::sync::watch::Receiver<bool>,
) {
    if let Some(a) = &config.alerts {
        let sf = config.sync.salesforce.as_ref().map(|s| s.client.clone());
        let alerter = Alerter::new(db.clone(), a.clone(), sf).with_ledger(ledger.clone());
        tokio::spawn(alerter.run(stop));
    }
}

fn default_instance() -> String {
    format!(
        "{}:{}",
        std::env::var("HOSTNAME").unwrap_or_else(|_| "cashloop".into()),
        std::process::id()
    )
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

fn safe_id(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '.'
            }
        })
        .collect()
}

/// At most `max` characters.
pub fn cut(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_owned();
    }
    let mut out: String = s.chars().take(max).collect();
    out.push('…');
    out
}

/// Masks runs of 13 or more digits (spaces and dashes between them allowed): card and bank
/// account numbers never reach an alert, whatever an error message quoted.
pub fn scrub(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < chars.len() {
        if chars[i].is_ascii_digit() {
            // The longest run of digits with single separators.
            let mut j = i;
            let mut digits = 0;
            let mut end = i;
            while j < chars.len() {
                if chars[j].is_ascii_digit() {
                    digits += 1;
                    end = j + 1;
                    j += 1;
                } else if (chars[j] == ' ' || chars[j] == '-')
                    && chars.get(j + 1).is_some_and(char::is_ascii_digit)
                {
                    j += 1;
                } else {
                    break;
                }
            }
            if digits >= 13 {
                out.push_str("[redacted]");
            } else {
                out.extend(&chars[i..end]);
            }
            i = end;
        } else {
            out.push(chars[i]);
            i += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scrub_masks_long_digit_runs() {
        assert_eq!(
            scrub("card 4111111111111111 declined"),
            "card [redacted] declined"
        );
        assert_eq!(scrub("card 4111 1111 1111 1111."), "card [redacted].");
        assert_eq!(scrub("acct 0001-2345-6789-0123"), "acct [redacted]");
        assert_eq!(
            scrub("job 42 failed at 2026-11-26"),
            "job 42 failed at 2026-11-26"
        );
        assert_eq!(scrub("123456789012"), "123456789012");
        assert_eq!(scrub("é 1234567890123 ü"), "é [redacted] ü");
    }

    #[test]
    fn kinds_round_trip() {
        for k in RuleKind::ALL {
            assert_eq!(RuleKind::parse(k.as_str()), Some(k));
        }
        assert_eq!(RuleKind::parse("nope"), None);
        assert_eq!(sync::salesforce::notifications::NO_TARGET_ID.len(), 18);
    }
}
