//! Notifications: the collector tells webhooks when something worth
//! knowing happens (a node newly failing a check, drift, a chain or
//! security event, a node gone stale, an expiry approaching).
//!
//! The notifier follows the store's drift timeline and chain events with a
//! cursor kept in the store, and scans for state changes that time alone
//! causes (stale nodes, expiry). Each message is written to a durable
//! outbox in the same transaction that moves the cursor or sets the mark
//! behind it; a delivery task per webhook sends the outbox oldest first
//! with HMAC-signed POSTs and retries with backoff until a 2xx answer. So a
//! restart, a crash or a receiver down for a day loses nothing (at least
//! once: the receiver de-duplicates on the idempotency key).
//!
//! Events of one kind and subject are held while more keep coming (until a
//! poll finds no new one, at most `storm_window`), so what arrives together
//! is sent together: a storm (`storm_threshold` events of one kind and subject
//! within `storm_window`, such as a bad rollout failing one check on 2,000
//! nodes) becomes one grouped message naming the count and the nodes.

pub mod config;
pub mod deliver;
pub mod notice;
pub mod scan;

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use self::config::Notifications;
use self::deliver::Sender;
use self::notice::{Message, Notice};
use crate::metrics::Metrics;
use crate::store::outbox::{MarkChanges, NotifyCursor, OutboxMessage, Settlement};
use crate::store::writer::StoreWriter;
use crate::store::{StoreError, StoreLocation, now_ms};

/// Rows read from each source per step.
const READ_LIMIT: usize = 5000;
/// Messages a delivery task takes from the outbox at a time.
const CLAIM_LIMIT: usize = 10;

/// A storm's identity: (kind, subject).
type GroupKey = (String, String);

/// Per group, when events were sent and how many.
type Recent = HashMap<GroupKey, VecDeque<(Instant, usize)>>;

/// Everything the notification tasks share.
struct Context {
    settings: Notifications,
    writer: StoreWriter,
    store: StoreLocation,
    metrics: Arc<Metrics>,
    /// A node silent this long is stale.
    stale_after_ms: i64,
    /// Woken when messages are enqueued: delivery starts at once.
    enqueued: Notify,
    /// Events recently sent per (kind, subject): a storm continues as one
    /// while its window lasts. Kept in memory: after a restart, at most
    /// `storm_threshold` events of a running storm go out one by one.
    recent: std::sync::Mutex<Recent>,
}

impl Context {
    async fn store<R, F>(&self, f: F) -> Result<R, StoreError>
    where
        R: Send + 'static,
        F: FnOnce(&mut dyn crate::store::Store) -> Result<R, StoreError> + Send + 'static,
    {
        self.writer.call(f).await?
    }

    fn recent_count(&self, key: &GroupKey, now: Instant) -> usize {
        let Ok(mut recent) = self.recent.lock() else { return 0 };
        let window = self.settings.storm_window;
        let Some(q) = recent.get_mut(key) else { return 0 };
        while q.front().is_some_and(|(t, _)| now.duration_since(*t) > window) {
            q.pop_front();
        }
        q.iter().map(|(_, n)| n).sum()
    }

    fn remember(&self, sent: &[(GroupKey, usize)], now: Instant) {
        let Ok(mut recent) = self.recent.lock() else { return };
        for (key, n) in sent {
            recent.entry(key.clone()).or_default().push_back((now, *n));
        }
        let window = self.settings.storm_window;
        recent.retain(|_, q| q.back().is_some_and(|(t, _)| now.duration_since(*t) <= window));
    }

    /// The outbox messages of `notices` for every webhook: one per notice,
    /// one per storm (a group that, with what was sent recently, has at
    /// least `storm_threshold` events).
    fn messages(&self, groups: &[(GroupKey, Vec<&Notice>)], now: Instant) -> Vec<OutboxMessage> {
        let storms: HashSet<&GroupKey> = groups
            .iter()
            .filter(|(key, g)| g.len() + self.recent_count(key, now) >= self.settings.storm_threshold)
            .map(|(key, _)| key)
            .collect();
        let mut out = Vec::new();
        for hook in &self.settings.webhooks {
            for (key, group) in groups {
                let wanted: Vec<&Notice> = group.iter().copied().filter(|n| notice::wanted(hook, n)).collect();
                let built: Vec<Message> = if storms.contains(key) {
                    notice::message(&wanted).into_iter().collect()
                } else {
                    wanted.iter().filter_map(|n| notice::message(&[*n])).collect()
                };
                out.extend(built.into_iter().map(|m| OutboxMessage {
                    endpoint: hook.name.clone(),
                    key: m.key,
                    kind: m.kind,
                    body: m.body,
                    occurred_ms: m.occurred_ms,
                }));
            }
        }
        out
    }

    /// Enqueue the messages of `notices` with `cursor` and `marks` in one
    /// transaction; false when another replica got there first.
    async fn enqueue(
        &self,
        notices: &[Notice],
        cursor: Option<(NotifyCursor, NotifyCursor)>,
        marks: MarkChanges,
    ) -> Result<bool, StoreError> {
        let now = Instant::now();
        let groups = notice::by_group(notices);
        let messages = self.messages(&groups, now);
        let per_endpoint: Vec<String> = messages.iter().map(|m| m.endpoint.clone()).collect();
        let committed = self
            .store(move |s| s.notify_commit(cursor.as_ref().map(|(from, to)| (from, to)), &marks, &messages, now_ms()))
            .await?;
        if committed {
            let sent: Vec<(GroupKey, usize)> = groups.iter().map(|(key, g)| (key.clone(), g.len())).collect();
            self.remember(&sent, now);
            for endpoint in per_endpoint {
                self.metrics.notification_enqueued(&endpoint);
            }
            self.enqueued.notify_waiters();
        }
        Ok(committed)
    }
}

/// How many rows of each source (changes, events) go out now. `seen`
/// gives when this notifier first read a notice (the collector's clock: a
/// row's own time is the node's, which may be anything). A group (one kind
/// and subject) is still arriving while its newest notice was first read
/// less than `settle_ms` ago: held, so that a storm is sent whole, until its
/// first one was read `window_ms` ago. The rows before the first row with a
/// held notice go; that row and those after it wait for a later poll (the
/// cursor is a position). A lone event waits one poll; rows of other kinds
/// keep flowing while a storm forms after them.
fn settled(
    changes: &[Vec<Notice>],
    events: &[Notice],
    seen: &dyn Fn(&Notice) -> i64,
    now_ms: i64,
    settle_ms: i64,
    window_ms: i64,
) -> (usize, usize) {
    let mut groups: HashMap<GroupKey, (i64, i64)> = HashMap::new();
    for n in changes.iter().flatten().chain(events) {
        let t = seen(n);
        let e = groups.entry((n.kind.clone(), n.subject.clone())).or_insert((t, t));
        e.0 = e.0.min(t);
        e.1 = e.1.max(t);
    }
    let held = |n: &Notice| {
        groups.get(&(n.kind.clone(), n.subject.clone())).is_some_and(|(first, latest)| {
            now_ms.saturating_sub(*latest) < settle_ms && now_ms.saturating_sub(*first) < window_ms
        })
    };
    let changes_cut = changes.iter().position(|ns| ns.iter().any(held)).unwrap_or(changes.len());
    let events_cut = events.iter().position(held).unwrap_or(events.len());
    (changes_cut, events_cut)
}

/// Follow the drift timeline and the chain events.
async fn follow_sources(ctx: Arc<Context>) {
    let mut cursor: Option<NotifyCursor> = None;
    // When each notice past the cursor was first read (by origin).
    let mut first_read: HashMap<String, i64> = HashMap::new();
    // Half a poll: a notice first read at one poll is settled at the next.
    let settle_ms = i64::try_from(ctx.settings.poll_interval.as_millis() / 2).unwrap_or(i64::MAX);
    let window_ms = i64::try_from(ctx.settings.storm_window.as_millis()).unwrap_or(i64::MAX);
    loop {
        tokio::time::sleep(ctx.settings.poll_interval).await;
        let from = match cursor {
            Some(c) => c,
            None => match ctx.store(|s| s.notify_cursor()).await {
                Ok(c) => c,
                Err(e) => {
                    tracing::error!("notifications: {e}");
                    continue;
                }
            },
        };
        cursor = Some(from);
        let batch = match ctx.store(move |s| s.notify_sources(&from, READ_LIMIT)).await {
            Ok(b) => b,
            Err(e) => {
                tracing::error!("notifications: {e}");
                continue;
            }
        };
        if batch.changes.is_empty() && batch.events.is_empty() {
            continue;
        }
        let changes: Vec<Vec<Notice>> = batch.changes.iter().map(notice::from_change).collect();
        let events: Vec<Notice> = batch.events.iter().map(notice::from_event).collect();
        let now = now_ms();
        let mut read_now: HashMap<String, i64> = HashMap::new();
        for n in changes.iter().flatten().chain(&events) {
            read_now.insert(n.origin.clone(), first_read.get(&n.origin).copied().unwrap_or(now));
        }
        first_read = read_now;
        let seen = |n: &Notice| first_read.get(&n.origin).copied().unwrap_or(now);
        let (c_cut, e_cut) = settled(&changes, &events, &seen, now, settle_ms, window_ms);
        if c_cut == 0 && e_cut == 0 {
            // Everything is still arriving: read it again next time.
            continue;
        }
        let to = NotifyCursor {
            changes: c_cut.checked_sub(1).and_then(|i| batch.changes.get(i)).map_or(from.changes, |r| r.position),
            events: e_cut.checked_sub(1).and_then(|i| batch.events.get(i)).map_or(from.events, |r| r.position),
        };
        let mut notices: Vec<Notice> = changes.into_iter().take(c_cut).flatten().collect();
        notices.extend(events.into_iter().take(e_cut));
        notices.sort_by_key(|n| n.at_ms);
        match ctx.enqueue(&notices, Some((from, to)), MarkChanges::default()).await {
            Ok(true) => cursor = Some(to),
            // Another replica moved the cursor: read it again.
            Ok(false) => cursor = None,
            Err(e) => tracing::error!("notifications: {e}"),
        }
    }
}

/// Announce nodes going stale and coming back.
async fn scan_stale(ctx: Arc<Context>) {
    loop {
        tokio::time::sleep(ctx.settings.stale_scan_interval).await;
        let state = ctx.store(|s| Ok((s.nodes()?, s.notify_marks(scan::STALE)?))).await;
        let (nodes, marks) = match state {
            Ok(s) => s,
            Err(e) => {
                tracing::error!("notifications: stale scan: {e}");
                continue;
            }
        };
        let marks: HashSet<String> = marks.into_iter().collect();
        let (notices, changes) = scan::stale_transitions(&nodes, &marks, now_ms(), ctx.stale_after_ms);
        if changes.is_empty() {
            continue;
        }
        match ctx.enqueue(&notices, None, changes).await {
            Ok(true) => {}
            Ok(false) => tracing::debug!("notifications: another collector announced these nodes first"),
            Err(e) => tracing::error!("notifications: stale scan: {e}"),
        }
    }
}

/// Warn of expiry: node certificates, end-of-life dates, waivers.
async fn scan_expiry(ctx: Arc<Context>) {
    let warn = scan::ExpiryWarnings {
        certificate_days: ctx.settings.certificate_warning_days.clone(),
        end_of_life_days: ctx.settings.end_of_life_warning_days.clone(),
        waiver_days: ctx.settings.waiver_warning_days.clone(),
    };
    // The first scan soon after the start, not during its reconnections.
    let mut wait = ctx.settings.expiry_scan_interval.min(Duration::from_secs(60));
    loop {
        tokio::time::sleep(wait).await;
        wait = ctx.settings.expiry_scan_interval;
        let location = ctx.store.clone();
        let findings =
            tokio::task::spawn_blocking(move || location.fleet_reader().and_then(|mut r| r.watched_findings())).await;
        let findings = match findings {
            Ok(Ok(f)) => f,
            Ok(Err(e)) => {
                tracing::error!("notifications: expiry scan: {e}");
                continue;
            }
            Err(e) => {
                tracing::error!("notifications: expiry scan: {e}");
                continue;
            }
        };
        let state = ctx
            .store(|s| {
                let mut marks = Vec::new();
                for prefix in scan::EXPIRY_PREFIXES {
                    marks.extend(s.notify_marks(prefix)?);
                }
                Ok((s.nodes()?, marks))
            })
            .await;
        let (nodes, marks) = match state {
            Ok(s) => s,
            Err(e) => {
                tracing::error!("notifications: expiry scan: {e}");
                continue;
            }
        };
        let marks: HashSet<String> = marks.into_iter().collect();
        let (notices, changes) = scan::expiry_warnings(&nodes, &findings, &marks, now_ms(), &warn);
        if changes.is_empty() {
            continue;
        }
        if let Err(e) = ctx.enqueue(&notices, None, changes).await {
            tracing::error!("notifications: expiry scan: {e}");
        }
    }
}

/// Deliver one webhook's outbox, oldest first.
async fn deliver(ctx: Arc<Context>, sender: Sender) {
    let name = sender.webhook().name.clone();
    // A claim is leased for as long as all its messages may take, each
    // up to the timeout (PostgreSQL replicas do not take each other's
    // before; after a replica's crash, another sends its claim once the
    // lease is over).
    let claim = u32::try_from(CLAIM_LIMIT).unwrap_or(u32::MAX);
    let lease = sender.webhook().timeout.saturating_mul(claim) + Duration::from_secs(10);
    let lease_ms = i64::try_from(lease.as_millis()).unwrap_or(i64::MAX);
    loop {
        let woken = ctx.enqueued.notified();
        tokio::pin!(woken);
        woken.as_mut().enable();
        let endpoint = name.clone();
        let claimed = ctx.store(move |s| s.outbox_claim(&endpoint, now_ms(), lease_ms, CLAIM_LIMIT)).await;
        let rows = match claimed {
            Ok(rows) => rows,
            Err(e) => {
                tracing::error!(webhook = %name, "notifications: {e}");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        if rows.is_empty() {
            tokio::select! {
                () = &mut woken => {}
                () = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
            continue;
        }
        let mut settlements = Vec::with_capacity(rows.len());
        let mut failed = false;
        for row in rows {
            if failed {
                settlements.push(Settlement::Release { id: row.id });
                continue;
            }
            match sender.send(&row.key, &row.kind, &row.body, row.attempts + 1).await {
                Ok(()) => {
                    let at_ms = now_ms();
                    ctx.metrics.notification_delivered(&name, at_ms.saturating_sub(row.created_ms));
                    tracing::debug!(webhook = %name, key = %row.key, kind = %row.kind, "notification delivered");
                    settlements.push(Settlement::Delivered { id: row.id, at_ms });
                }
                Err(e) => {
                    let wait = deliver::backoff(row.attempts, ctx.settings.max_backoff);
                    ctx.metrics.notification_failed(&name);
                    // The first failure and every tenth: a receiver down
                    // for a day does not fill the journal.
                    if row.attempts % 10 == 0 {
                        tracing::warn!(
                            webhook = %name,
                            key = %row.key,
                            attempt = row.attempts + 1,
                            "notification not delivered: {e}; next attempt in {} ms",
                            wait.as_millis()
                        );
                    } else {
                        tracing::debug!(webhook = %name, key = %row.key, attempt = row.attempts + 1, "not delivered: {e}");
                    }
                    let next_ms = now_ms().saturating_add(i64::try_from(wait.as_millis()).unwrap_or(i64::MAX));
                    settlements.push(Settlement::Retry { id: row.id, next_ms, error: e.to_string() });
                    failed = true;
                }
            }
        }
        if let Err(e) = ctx.store(move |s| s.outbox_settle(&settlements)).await {
            // Not recorded: the messages are sent again after their lease.
            tracing::error!(webhook = %name, "notifications: {e}");
        }
    }
}

/// The backlog gauges, and forgetting delivered messages past
/// `keep_delivered`.
async fn upkeep(ctx: Arc<Context>) {
    let mut last_forget: Option<Instant> = None;
    loop {
        match ctx.store(|s| s.outbox_backlog()).await {
            Ok(backlog) => ctx.metrics.notification_backlog(
                ctx.settings.webhooks.iter().map(|w| {
                    let b = backlog.iter().find(|b| b.endpoint == w.name);
                    (w.name.as_str(), b.map_or(0, |b| b.pending), b.and_then(|b| b.oldest_created_ms))
                }),
                now_ms(),
            ),
            Err(e) => tracing::error!("notifications: {e}"),
        }
        if last_forget.is_none_or(|t| t.elapsed() >= Duration::from_secs(3600)) {
            last_forget = Some(Instant::now());
            let keep = i64::try_from(ctx.settings.keep_delivered.as_millis()).unwrap_or(i64::MAX);
            let before = now_ms().saturating_sub(keep);
            match ctx.store(move |s| s.outbox_forget_delivered(before)).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(
                    "notifications: forgot {n} messages delivered more than {} ago",
                    humantime::format_duration(ctx.settings.keep_delivered)
                ),
                Err(e) => tracing::error!("notifications: {e}"),
            }
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
}

/// Start the notification tasks on the current runtime. Errors (a webhook
/// whose HTTP client cannot be built) stop the start.
pub fn start(
    settings: Notifications,
    writer: StoreWriter,
    store: StoreLocation,
    metrics: Arc<Metrics>,
    report_interval_secs: u64,
) -> Result<Vec<tokio::task::JoinHandle<()>>, deliver::DeliveryError> {
    let senders = settings.webhooks.iter().cloned().map(Sender::new).collect::<Result<Vec<_>, _>>()?;
    for hook in &settings.webhooks {
        metrics.notification_endpoint(&hook.name);
    }
    let stale_after_ms = i64::try_from(report_interval_secs.saturating_mul(3).saturating_mul(1000)).unwrap_or(i64::MAX);
    let ctx = Arc::new(Context {
        settings,
        writer,
        store,
        metrics,
        stale_after_ms,
        enqueued: Notify::new(),
        recent: std::sync::Mutex::default(),
    });
    let mut tasks = vec![
        tokio::spawn(follow_sources(Arc::clone(&ctx))),
        tokio::spawn(scan_stale(Arc::clone(&ctx))),
        tokio::spawn(scan_expiry(Arc::clone(&ctx))),
        tokio::spawn(upkeep(Arc::clone(&ctx))),
    ];
    for sender in senders {
        tasks.push(tokio::spawn(deliver(Arc::clone(&ctx), sender)));
    }
    Ok(tasks)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn n(kind: &str, subject: &str, at_ms: i64) -> Notice {
        Notice {
            kind: kind.into(),
            severity: kosmos_proto::verdict::Severity::High,
            subject: subject.into(),
            node_id: "n".into(),
            hostname: None,
            at_ms,
            origin: format!("{kind}{subject}{at_ms}"),
            summary: String::new(),
            detail: serde_json::Value::Null,
        }
    }

    #[test]
    fn a_group_still_arriving_is_held_and_what_came_before_it_goes() {
        let now = 100_000;
        // When each notice was first read: here its own time.
        let seen = |n: &Notice| n.at_ms;
        // An old lone change, then a storm still arriving, then a lone event.
        let changes = vec![
            vec![n("finding.failing", "a", now - 5_000)],
            Vec::new(),
            vec![n("finding.failing", "b", now - 3_000)],
            vec![n("finding.failing", "b", now - 100)],
            vec![n("finding.fixed", "c", now - 4_000)],
        ];
        let events = vec![n("chain.gap", "gap", now - 2_000)];
        assert_eq!(settled(&changes, &events, &seen, now, 500, 60_000), (2, 1));
        // Once the storm is quiet for the settle time, everything goes.
        assert_eq!(settled(&changes, &events, &seen, now + 500, 500, 60_000), (5, 1));
        // A storm that never stops goes when its window is over.
        assert_eq!(settled(&changes, &events, &seen, now, 500, 3_000), (5, 1));
        // A lone event waits one settle time.
        let young = vec![n("chain.fork", "fork", now - 10)];
        assert_eq!(settled(&[], &young, &seen, now, 500, 60_000), (0, 0));
        assert_eq!(settled(&[], &young, &seen, now + 490, 500, 60_000), (0, 1));
    }

    #[test]
    fn a_node_clock_far_ahead_holds_nothing() {
        // Rows stamped years ahead (and long ago) by their nodes, first read
        // a poll ago: their own times play no part.
        let now = 100_000;
        let rows = vec![vec![n("finding.failing", "a", i64::MAX / 2)], vec![n("finding.failing", "b", 5)]];
        let seen = |_: &Notice| now - 600;
        assert_eq!(settled(&rows, &[], &seen, now, 500, 60_000), (2, 0));
    }
}
