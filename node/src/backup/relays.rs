//! The backup relay connection: its own nostr-sdk client (separate from the swap transport, with
//! the backup size limits), publishing with "one relay accepted" semantics, and fetching every
//! backup event of our key with a per-relay end-of-stored-events check.

use std::collections::HashSet;
use std::time::Duration;

use nostr_sdk::prelude::{
    Client, Event, EventId, Filter, Kind, PublicKey, Relay, RelayLimits, RelayMessage,
    RelayNotification, RelayOptions, RelayStatus, RelayUrl, ReqExitPolicy,
    SubscribeAutoCloseOptions, SubscribeOptions, SubscriptionId, Timestamp,
};
use tokio::sync::broadcast;

use super::codec::{BACKUP_KIND, MAX_BACKUP_EVENT_BYTES};
use super::BackupError;

/// Events asked for per page of a fetch.
const PAGE_SIZE: usize = 500;

/// Most backup events read from one relay (our own events only; a relay cannot forge them).
pub const MAX_FETCH_EVENTS_PER_RELAY: usize = 20_000;

/// Most bytes of backup events read from one relay.
pub const MAX_FETCH_BYTES_PER_RELAY: usize = 64 * 1024 * 1024;

/// The relays the backups go to (the node's own relays).
pub struct BackupRelays {
    client: Client,
    relays: Vec<RelayUrl>,
}

impl std::fmt::Debug for BackupRelays {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackupRelays").field("relays", &self.relays).finish()
    }
}

/// What [`BackupRelays::fetch`] got.
#[derive(Debug, Clone, Default)]
pub struct Fetched {
    /// Every distinct backup event of our key (all relays together).
    pub events: Vec<Event>,
    /// Relays that answered every page up to their end of stored events.
    pub relays_answered: usize,
    /// Relays that did not (down, timed out, closed the query).
    pub relays_failed: usize,
    /// A relay held more than the fetch limits: some events were not read.
    pub truncated: bool,
}

/// How one relay's fetch ended.
struct RelayFetch {
    events: Vec<Event>,
    truncated: bool,
}

impl BackupRelays {
    /// A client for `relays`, connecting in the background (relays that are down are retried
    /// with backoff).
    ///
    /// # Errors
    /// [`BackupError::NoRelays`], [`BackupError::RelayUrl`], [`BackupError::Pool`].
    pub async fn connect(relays: &[String]) -> Result<BackupRelays, BackupError> {
        Self::connect_via(relays, None).await
    }

    /// [`BackupRelays::connect`] through the SOCKS5 `proxy` when there is one (the node's
    /// `proxy` setting).
    ///
    /// # Errors
    /// As [`BackupRelays::connect`].
    pub async fn connect_via(
        relays: &[String],
        proxy: Option<std::net::SocketAddr>,
    ) -> Result<BackupRelays, BackupError> {
        if relays.is_empty() {
            return Err(BackupError::NoRelays);
        }
        let urls = relays
            .iter()
            .map(|r| {
                RelayUrl::parse(r)
                    .map_err(|e| BackupError::RelayUrl { url: r.clone(), reason: e.to_string() })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let max_event = u32::try_from(MAX_BACKUP_EVENT_BYTES).unwrap_or(u32::MAX);
        let mut limits = RelayLimits::default();
        limits.messages.max_size = Some(max_event.saturating_add(1024));
        limits.events.max_size = Some(max_event);
        let opts = RelayOptions::new()
            .retry_interval(Duration::from_secs(5))
            .adjust_retry_interval(true)
            .reconnect(true)
            .limits(limits)
            .connection_mode(crate::nostr::connection_mode(proxy));
        let client = Client::default();
        for url in &urls {
            client
                .pool()
                .add_relay(url.clone(), opts.clone())
                .await
                .map_err(|e| BackupError::Pool(e.to_string()))?;
        }
        client.connect().await;
        Ok(BackupRelays { client, relays: urls })
    }

    /// The relays.
    pub fn relays(&self) -> &[RelayUrl] {
        &self.relays
    }

    /// Disconnects from every relay.
    pub async fn shutdown(&self) {
        self.client.shutdown().await;
    }

    async fn relay(&self, url: &RelayUrl) -> Option<Relay> {
        self.client.relay(url.clone()).await.ok()
    }

    /// Sends `event` to every relay and returns as soon as one accepted it (`OK true`); the
    /// others keep trying in the background. Retries with a backoff until `timeout`.
    ///
    /// # Errors
    /// [`BackupError::NotDelivered`] when no relay accepted it in time.
    pub async fn publish(&self, event: &Event, timeout: Duration) -> Result<RelayUrl, BackupError> {
        crate::nostr::send_until_accepted(&self.client, &self.relays, event, timeout)
            .await
            .map_err(|last_error| BackupError::NotDelivered { timeout, last_error })
    }

    /// Fetches every backup event authored by `author` from every relay, page by page (newest
    /// first, `until` moving back), each relay up to its end of stored events. `timeout` bounds
    /// the wait for a relay's connection and for each page.
    ///
    /// # Errors
    /// [`BackupError::NoRelayAnswered`] when no relay answered completely.
    pub async fn fetch(
        &self,
        author: PublicKey,
        timeout: Duration,
    ) -> Result<Fetched, BackupError> {
        let mut tasks = Vec::new();
        for url in &self.relays {
            let relay = self.relay(url).await;
            let url = url.clone();
            tasks.push(async move {
                let res = match relay {
                    Some(relay) => fetch_relay(&relay, author, timeout).await,
                    None => Err("not in the pool".to_string()),
                };
                (url, res)
            });
        }
        let results = futures_util::future::join_all(tasks).await;
        let mut out = Fetched::default();
        let mut seen: HashSet<EventId> = HashSet::new();
        for (url, res) in results {
            match res {
                Ok(f) => {
                    tracing::debug!(relay = %url, events = f.events.len(), "backups fetched");
                    out.relays_answered += 1;
                    out.truncated |= f.truncated;
                    for e in f.events {
                        if seen.insert(e.id) {
                            out.events.push(e);
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(relay = %url, error = %e, "cannot fetch the backups from a relay");
                    out.relays_failed += 1;
                }
            }
        }
        if out.relays_answered == 0 {
            return Err(BackupError::NoRelayAnswered { timeout });
        }
        Ok(out)
    }
}

async fn fetch_relay(
    relay: &Relay,
    author: PublicKey,
    timeout: Duration,
) -> Result<RelayFetch, String> {
    relay.wait_for_connection(timeout).await;
    if !relay.is_connected() {
        return Err(format!("not connected within {timeout:?}"));
    }
    let mut events = Vec::new();
    let mut seen: HashSet<EventId> = HashSet::new();
    let mut bytes = 0usize;
    let mut until: Option<Timestamp> = None;
    loop {
        let mut filter =
            Filter::new().kind(Kind::Custom(BACKUP_KIND)).author(author).limit(PAGE_SIZE);
        if let Some(u) = until {
            filter = filter.until(u);
        }
        let page = fetch_page(relay, filter, author, timeout).await?;
        let mut oldest: Option<Timestamp> = None;
        let mut fresh = 0usize;
        for event in page {
            oldest = Some(oldest.map_or(event.created_at, |o| o.min(event.created_at)));
            if !seen.insert(event.id) {
                continue;
            }
            fresh += 1;
            bytes = bytes.saturating_add(event.content.len());
            events.push(event);
            if events.len() >= MAX_FETCH_EVENTS_PER_RELAY || bytes >= MAX_FETCH_BYTES_PER_RELAY {
                return Ok(RelayFetch { events, truncated: true });
            }
        }
        // `until` is inclusive: the next page repeats the oldest second (deduplicated above) and
        // ends the walk once nothing new comes.
        match oldest {
            Some(o) if fresh > 0 => until = Some(o),
            _ => return Ok(RelayFetch { events, truncated: false }),
        }
    }
}

/// One `REQ` on one relay until its `EOSE`. An event is kept only when it is a backup event of
/// `author` (a relay may send anything).
async fn fetch_page(
    relay: &Relay,
    filter: Filter,
    author: PublicKey,
    timeout: Duration,
) -> Result<Vec<Event>, String> {
    let mut notifications = relay.notifications();
    let id = SubscriptionId::generate();
    let auto_close = SubscribeAutoCloseOptions::default()
        .exit_policy(ReqExitPolicy::ExitOnEOSE)
        .timeout(Some(timeout));
    relay
        .subscribe_with_id(
            id.clone(),
            filter,
            SubscribeOptions::default().close_on(Some(auto_close)),
        )
        .await
        .map_err(|e| e.to_string())?;
    let collect = async {
        let mut page = Vec::new();
        loop {
            match notifications.recv().await {
                Ok(RelayNotification::Message { message }) => match message {
                    RelayMessage::Event { subscription_id, event } if *subscription_id == id => {
                        if event.kind == Kind::Custom(BACKUP_KIND) && event.pubkey == author {
                            page.push(event.into_owned());
                        }
                        if page.len() > PAGE_SIZE.saturating_mul(2) {
                            return Err("relay sent more events than asked".to_string());
                        }
                    }
                    RelayMessage::EndOfStoredEvents(sid) if *sid == id => return Ok(page),
                    RelayMessage::Closed { subscription_id, message } if *subscription_id == id => {
                        return Err(format!("relay closed the query: {message}"));
                    }
                    _ => {}
                },
                Ok(RelayNotification::RelayStatus { status }) => {
                    if matches!(
                        status,
                        RelayStatus::Disconnected | RelayStatus::Terminated | RelayStatus::Banned
                    ) {
                        return Err(format!("relay {status}"));
                    }
                }
                Ok(RelayNotification::Shutdown) => return Err("shut down".to_string()),
                Ok(_) => {}
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    return Err(format!("missed {n} relay notifications"));
                }
                Err(broadcast::error::RecvError::Closed) => return Err("relay gone".to_string()),
            }
        }
    };
    match tokio::time::timeout(timeout, collect).await {
        Ok(res) => res,
        Err(_) => Err(format!("no end of stored events within {timeout:?}")),
    }
}
