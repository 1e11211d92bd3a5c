//! The relay pool, the offer publisher and the swap-message sender and receiver.

use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex as StdMutex};
use std::time::{Duration, Instant};

use nostr_sdk::prelude::*;
use tokio::sync::{broadcast, mpsc, Mutex};
use tokio::task::JoinHandle;

use super::offers::{self, DiscoveredOffer, OfferFilter};
use super::processed::{ProcessedEvents, ProcessedStoreError};
use super::ratelimit::{RateLimit, RateLimiter};
use super::wire::{self, Envelope, Offer, MAX_MESSAGE_BYTES, MAX_OFFER_BYTES, OFFER_KIND};
use super::wrap::{self, WrapError};

/// How many gift-wrap ids the receiver remembers in memory (beyond the persistent store) to
/// de-duplicate copies arriving from several relays.
const SEEN_CAPACITY: usize = 100_000;

/// How often the receiver asks the relays again for recent gift wraps (see `Receiver::run`).
const REFETCH_INTERVAL: Duration = Duration::from_secs(30);

/// How far back that refetch looks: NIP-59's two days of randomised `created_at`, plus a day.
const REFETCH_WINDOW: Duration = Duration::from_secs(3 * 24 * 3600);

/// Most keys in the `#p` of one subscription filter: the swap keys read on a relay are spread
/// over as many subscriptions as needed (relays bound the size of a filter).
pub const MAX_KEYS_PER_FILTER: usize = 100;

/// Id of the identity's subscription on each relay it is read on.
const IDENTITY_SUBSCRIPTION: &str = "looper-identity";

/// Prefix of the ids of the swap keys' subscriptions on a relay (`looper-swap-keys-0`, ...).
const SWAP_KEYS_SUBSCRIPTION: &str = "looper-swap-keys-";

/// Configuration of a [`NostrTransport`].
#[derive(Clone)]
pub struct TransportConfig {
    /// The node's Nostr identity secret key (derived from the seed by the caller). Never logged.
    /// Swap keys are added at runtime ([`NostrTransport::add_key`]).
    pub secret_key: [u8; 32],
    /// Our relays (`wss://` or `ws://` URLs): offers are published and messages received here.
    pub relays: Vec<String>,
    /// Proof of work (NIP-13 leading zero bits) demanded on the gift wrap of every `swap_request`
    /// sent to us, whatever offer it takes (a published offer's own `pow_difficulty` is demanded
    /// from requests for that offer in any case). `None` or `Some(0)`: none beyond the offers'.
    pub pow_difficulty: Option<u8>,
    /// Per-sender limit on new swap requests.
    pub request_rate_limit: RateLimit,
    /// Per-sender limit on all swap messages (including undecodable ones).
    pub message_rate_limit: RateLimit,
    /// Lifetime of a swap-message gift wrap (its NIP-40 `expiration`): must exceed the swap timeout.
    pub message_ttl: Duration,
    /// Lifetime of a published offer version (its NIP-40 `expiration`); refresh well before.
    pub offer_ttl: Duration,
    /// Events larger than this (NIP-01 JSON, bytes) are dropped by the relay connection before
    /// they are parsed. Default: [`crate::nostr::max_gift_wrap_bytes`] of [`MAX_MESSAGE_BYTES`].
    pub max_event_bytes: usize,
    /// Base interval between reconnection attempts to a relay (nostr-sdk grows it with each
    /// failure, up to 60 s, with a few seconds of jitter).
    pub retry_interval: Duration,
    /// How long [`NostrTransport::send`] and [`NostrTransport::publish_offer`] keep retrying until
    /// at least one relay has accepted the event.
    pub send_timeout: Duration,
    /// How long [`NostrTransport::discover_offers`] waits for relays to answer.
    pub fetch_timeout: Duration,
    /// When `false` (default), an incoming event is marked processed just before it is delivered.
    /// When `true`, the engine marks it with [`NostrTransport::ack`] after it has acted on it, so a
    /// crash in between redelivers it after the restart.
    pub manual_ack: bool,
    /// Capacity of the [`NostrTransport::incoming`] channel.
    pub channel_capacity: usize,
    /// At most this many of a peer's advertised relays are used per message.
    pub max_hint_relays: usize,
    /// SOCKS5 proxy every relay connection goes through (our relays and a peer's), host names
    /// resolved by the proxy (Tor: `127.0.0.1:9050`). `None`: direct connections.
    pub proxy: Option<SocketAddr>,
}

impl TransportConfig {
    /// A configuration with the default limits.
    pub fn new(secret_key: [u8; 32], relays: Vec<String>) -> Self {
        Self {
            secret_key,
            relays,
            pow_difficulty: None,
            request_rate_limit: RateLimit::new(5, 10),
            message_rate_limit: RateLimit::new(60, 120),
            message_ttl: Duration::from_secs(7 * 24 * 3600),
            offer_ttl: Duration::from_secs(3600),
            max_event_bytes: wrap::max_gift_wrap_bytes(MAX_MESSAGE_BYTES),
            retry_interval: Duration::from_secs(5),
            send_timeout: Duration::from_secs(30),
            fetch_timeout: Duration::from_secs(10),
            manual_ack: false,
            channel_capacity: 1024,
            max_hint_relays: 8,
            proxy: None,
        }
    }
}

impl fmt::Debug for TransportConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TransportConfig")
            .field("secret_key", &"<redacted>")
            .field("relays", &self.relays)
            .field("pow_difficulty", &self.pow_difficulty)
            .field("request_rate_limit", &self.request_rate_limit)
            .field("message_rate_limit", &self.message_rate_limit)
            .field("message_ttl", &self.message_ttl)
            .field("offer_ttl", &self.offer_ttl)
            .field("max_event_bytes", &self.max_event_bytes)
            .field("retry_interval", &self.retry_interval)
            .field("send_timeout", &self.send_timeout)
            .field("fetch_timeout", &self.fetch_timeout)
            .field("manual_ack", &self.manual_ack)
            .field("channel_capacity", &self.channel_capacity)
            .field("max_hint_relays", &self.max_hint_relays)
            .field("proxy", &self.proxy)
            .finish()
    }
}

/// Errors of the transport.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// The configured secret key is not a valid secp256k1 scalar.
    #[error("invalid node secret key")]
    InvalidKey,
    /// No relay configured.
    #[error("no relay configured")]
    NoRelays,
    /// A relay URL does not parse.
    #[error("invalid relay url {url:?}: {reason}")]
    RelayUrl {
        /// The URL as given.
        url: String,
        /// Why it was refused.
        reason: String,
    },
    /// The relay pool refused an operation.
    #[error("relay pool: {0}")]
    Pool(String),
    /// The message or offer could not be encoded.
    #[error("encoding: {0}")]
    Encode(String),
    /// The encoded message or offer is over its size limit.
    #[error("{what} is {size} bytes, over the {max}-byte limit")]
    TooLarge {
        /// `message` or `offer`.
        what: &'static str,
        /// Encoded size.
        size: usize,
        /// Limit.
        max: usize,
    },
    /// Building the gift wrap failed.
    #[error(transparent)]
    Wrap(#[from] WrapError),
    /// No relay accepted the event before the send timeout.
    #[error("no relay accepted event {event_id} within {timeout:?}: {last_error}")]
    NotDelivered {
        /// The event that was not delivered.
        event_id: EventId,
        /// The send timeout.
        timeout: Duration,
        /// The last relay error seen.
        last_error: String,
    },
    /// The processed-events store failed.
    #[error(transparent)]
    Store(#[from] ProcessedStoreError),
    /// The transport was shut down.
    #[error("transport is shut down")]
    Shutdown,
    /// A message was to be sent as a key the transport does not hold (neither the node's
    /// identity nor a swap key added with [`NostrTransport::add_key`]).
    #[error("not one of this node's keys: {0}")]
    UnknownKey(PublicKey),
}

/// A swap message addressed to this node.
#[derive(Debug, Clone)]
pub struct Incoming {
    /// The peer's node key (author of the seal and of the rumor).
    pub sender: PublicKey,
    /// Which of this node's keys the gift wrap is addressed to: its identity, or a swap's own
    /// key ([`NostrTransport::add_key`]). Answers go out as this key.
    pub recipient: PublicKey,
    /// Id of the gift wrap (the id persisted in [`ProcessedEvents`]).
    pub event_id: EventId,
    /// The relay it first arrived from.
    pub relay: RelayUrl,
    /// The rumor's `created_at`, set by the sender (gift wrap and seal times are randomised).
    pub created_at: Timestamp,
    /// NIP-13 work committed by the gift wrap (see [`crate::nostr::committed_pow`]).
    pub pow_bits: u8,
    /// The decoded envelope, or why it did not decode (answer with
    /// [`wire::DecodeError::reply`] when it names a swap).
    pub message: Result<Envelope, wire::DecodeError>,
}

/// Options of one [`NostrTransport::send_with`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SendOptions {
    /// Mine NIP-13 proof of work on the gift wrap (the peer's offer `pow_difficulty`).
    pub pow: Option<u8>,
    /// Override [`TransportConfig::message_ttl`] for this message.
    pub ttl: Option<Duration>,
    /// Seal the message with this key, one added with [`NostrTransport::add_key`] (a swap's own
    /// key); `None`: the node's identity.
    pub from: Option<PublicKey>,
}

/// What [`NostrTransport::send`] did.
#[derive(Debug, Clone)]
pub struct SendReport {
    /// Id of the published event.
    pub event_id: EventId,
    /// Size of the event's NIP-01 JSON, in bytes.
    pub event_bytes: usize,
    /// The relay that accepted it first (the other targets keep trying in the background).
    pub accepted_by: RelayUrl,
    /// Every relay the event was sent to.
    pub targets: Vec<RelayUrl>,
}

/// Counters of the receiver, for logs and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TransportStats {
    /// Gift wraps addressed to us seen (all copies).
    pub received: u64,
    /// Messages delivered on [`NostrTransport::incoming`].
    pub delivered: u64,
    /// Copies dropped as duplicates (another relay, or processed before).
    pub duplicates: u64,
    /// Events dropped for their size, unread.
    pub oversize: u64,
    /// Gift wraps that did not open (bad encryption, bad seal, wrong kind, wrong recipient).
    pub invalid: u64,
    /// Messages dropped by a per-sender rate limit.
    pub rate_limited: u64,
    /// Swap requests dropped for missing proof of work.
    pub insufficient_pow: u64,
    /// Bytes sent to all relays (websocket text frames).
    pub bytes_sent: u64,
    /// Bytes received from all relays.
    pub bytes_received: u64,
}

#[derive(Default)]
struct Counters {
    received: AtomicU64,
    delivered: AtomicU64,
    duplicates: AtomicU64,
    oversize: AtomicU64,
    invalid: AtomicU64,
    rate_limited: AtomicU64,
    insufficient_pow: AtomicU64,
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

struct Inner {
    client: Client,
    /// The node's identity.
    keys: Keys,
    /// Swap keys received and sent as besides the identity ([`NostrTransport::add_key`]).
    swap_keys: StdMutex<HashMap<PublicKey, Keys>>,
    /// Which of our keys each relay is asked for; held while relays are told of a change, so
    /// that changes reach them in order.
    listening: Mutex<Listening>,
    config: TransportConfig,
    our_relays: Vec<RelayUrl>,
    relay_opts: RelayOptions,
    processed: Arc<dyn ProcessedEvents>,
    offers: Mutex<HashMap<String, Offer>>,
    last_offer_time: StdMutex<HashMap<String, Timestamp>>,
    counters: Counters,
    incoming: StdMutex<Option<mpsc::Receiver<Incoming>>>,
    tasks: StdMutex<Vec<JoinHandle<()>>>,
    /// Messages without proof of work may come (this node has swaps as a buyer, whose sellers
    /// do not mine): the proof of work is then checked after decrypting, on swap requests only
    /// ([`NostrTransport::set_unmined_expected`]).
    unmined_expected: std::sync::atomic::AtomicBool,
}

/// Which of the node's keys each relay is asked for. A key is read on the node's own relays and
/// on every relay it sent a message to (a peer's relays), nowhere else: a relay learns no key
/// that did not speak there (a seller's relay sees neither the buyer's identity nor its swap keys
/// with other sellers).
#[derive(Default)]
struct Listening {
    /// Relays the identity is read on (subscription [`IDENTITY_SUBSCRIPTION`]).
    identity: std::collections::HashSet<RelayUrl>,
    /// Per relay, the swap keys read there, by subscription ([`SWAP_KEYS_SUBSCRIPTION`] and its
    /// position), at most [`MAX_KEYS_PER_FILTER`] each; an emptied one is reused.
    swap_keys: HashMap<RelayUrl, Vec<Vec<PublicKey>>>,
}

/// The Nostr side of a Looper node. Cheap to clone (shared state).
#[derive(Clone)]
pub struct NostrTransport {
    inner: Arc<Inner>,
}

impl fmt::Debug for NostrTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NostrTransport")
            .field("public_key", &self.inner.keys.public_key())
            .field("relays", &self.inner.our_relays)
            .finish()
    }
}

/// Stops the offer refresher when dropped.
#[derive(Debug)]
pub struct RefreshHandle(JoinHandle<()>);

impl RefreshHandle {
    /// Stops the refresher now.
    pub fn stop(self) {
        self.0.abort();
    }
}

impl Drop for RefreshHandle {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// How a relay connection is made: through the SOCKS5 `proxy` when there is one.
pub(crate) fn connection_mode(proxy: Option<SocketAddr>) -> ConnectionMode {
    match proxy {
        Some(addr) => ConnectionMode::proxy(addr),
        None => ConnectionMode::direct(),
    }
}

fn parse_relay(url: &str) -> Result<RelayUrl, TransportError> {
    RelayUrl::parse(url)
        .map_err(|e| TransportError::RelayUrl { url: url.to_string(), reason: e.to_string() })
}

fn now_plus(d: Duration) -> Timestamp {
    Timestamp::from_secs(Timestamp::now().as_secs().saturating_add(d.as_secs()))
}

impl NostrTransport {
    /// Connects to the configured relays and starts receiving swap messages addressed to the node.
    ///
    /// Relays that are down are retried in the background with backoff; the transport works as
    /// long as one relay is reachable.
    pub async fn connect(
        config: TransportConfig,
        processed: Arc<dyn ProcessedEvents>,
    ) -> Result<Self, TransportError> {
        let secret =
            SecretKey::from_slice(&config.secret_key).map_err(|_| TransportError::InvalidKey)?;
        let keys = Keys::new(secret);
        if config.relays.is_empty() {
            return Err(TransportError::NoRelays);
        }
        let our_relays =
            config.relays.iter().map(|r| parse_relay(r)).collect::<Result<Vec<_>, _>>()?;

        // Size limits applied by the websocket reader before an event is parsed or verified. The
        // pool logs an event over its limits whole, at ERROR, at every refetch: gift wraps are
        // let through up to 4 times the node's limit, so that the transport drops them with one
        // short line ([`RELAY_DUMP_TARGET`] filters the pool's dumps of larger ones).
        let max_event = u32::try_from(config.max_event_bytes).unwrap_or(u32::MAX);
        let max_offer = u32::try_from(MAX_OFFER_BYTES.saturating_add(2048)).unwrap_or(u32::MAX);
        let max_wrap = max_event.saturating_mul(4);
        let mut limits = RelayLimits::default();
        limits.messages.max_size = Some(max_wrap.max(max_offer).saturating_add(1024));
        limits.events = limits
            .events
            .set_max_size_per_kind(Kind::GiftWrap, Some(max_wrap))
            .set_max_size_per_kind(Kind::Custom(OFFER_KIND), Some(max_offer));
        limits.events.max_size = Some(max_wrap.max(max_offer));
        let relay_opts = RelayOptions::new()
            .retry_interval(config.retry_interval)
            .adjust_retry_interval(true)
            .reconnect(true)
            .limits(limits)
            .connection_mode(connection_mode(config.proxy));

        // The relays are added with `relay_opts` (proxy included); the client's own connection
        // setting covers any relay it would add by itself.
        let mut connection = Connection::new();
        if let Some(proxy) = config.proxy {
            connection = connection.proxy(proxy);
        }
        let client = Client::builder()
            .signer(keys.clone())
            .opts(ClientOptions::new().connection(connection))
            .build();
        for url in &our_relays {
            client
                .pool()
                .add_relay(url.clone(), relay_opts.clone())
                .await
                .map_err(|e| TransportError::Pool(e.to_string()))?;
        }
        let notifications = client.notifications();
        client.connect().await;
        client.wait_for_connection(Duration::from_secs(5)).await;

        let (tx, rx) = mpsc::channel(config.channel_capacity.max(1));
        let inner = Arc::new(Inner {
            client,
            keys,
            swap_keys: StdMutex::new(HashMap::new()),
            listening: Mutex::new(Listening::default()),
            our_relays,
            relay_opts,
            processed,
            offers: Mutex::new(HashMap::new()),
            last_offer_time: StdMutex::new(HashMap::new()),
            counters: Counters::default(),
            incoming: StdMutex::new(Some(rx)),
            tasks: StdMutex::new(Vec::new()),
            unmined_expected: std::sync::atomic::AtomicBool::new(true),
            config,
        });
        let receiver = Receiver::new(Arc::clone(&inner), tx);
        let handle = tokio::spawn(receiver.run(notifications));
        if let Ok(mut tasks) = inner.tasks.lock() {
            tasks.push(handle);
        }
        let transport = Self { inner };
        // Gift wraps addressed to us, without `since`: NIP-59 randomises created_at up to two days
        // into the past, so a `since` would silently skip messages. Duplicates are filtered by
        // the receiver. On our relays only: a peer's relay is asked for a key once it spoke
        // there. Swap keys get subscriptions of their own as they come (`add_key`).
        let identity = transport.inner.keys.public_key();
        if let Err(e) = transport.listen(identity, &transport.inner.our_relays).await {
            // Asked again at the next message the node sends as its identity there.
            tracing::warn!(error = %e, "not every relay reads the node's key yet");
        }
        let inner = &transport.inner;
        tracing::info!(
            pubkey = %inner.keys.public_key(),
            relays = inner.our_relays.len(),
            "nostr transport started"
        );
        Ok(transport)
    }

    /// The node's Nostr public key (sellers advertise it as the author of their offers).
    pub fn public_key(&self) -> PublicKey {
        self.inner.keys.public_key()
    }

    /// Receives the gift wraps addressed to `keys` too, and lets [`SendOptions::from`] seal
    /// messages with it: a buyer swap's own key, which its seller sees instead of the node's
    /// identity (spec `04-nostr.md`, "Keys"). The relays are asked at once for the gift wraps
    /// to it (stored ones included: no `since`), in a subscription of at most
    /// [`MAX_KEYS_PER_FILTER`] keys; no connection is reopened. Adding a key twice, or the
    /// identity, changes nothing.
    ///
    /// # Errors
    /// [`TransportError::Pool`] when the relay pool refused the subscription: the key is held all
    /// the same, and the periodic refetch asks the relays for its gift wraps.
    pub async fn add_key(&self, keys: Keys) -> Result<(), TransportError> {
        let key = keys.public_key();
        if key == self.inner.keys.public_key() {
            return Ok(());
        }
        lock(&self.inner.swap_keys).insert(key, keys);
        self.listen(key, &self.inner.our_relays).await
    }

    /// Stops receiving the gift wraps addressed to `key` (added with
    /// [`NostrTransport::add_key`]) and forgets it: on every relay that read it, the
    /// subscription that held it is sent again without it, or closed when it held nothing
    /// else. The identity cannot be removed.
    pub async fn remove_key(&self, key: &PublicKey) {
        let mut listening = self.inner.listening.lock().await;
        if lock(&self.inner.swap_keys).remove(key).is_none() {
            return;
        }
        for (url, subscriptions) in listening.swap_keys.iter_mut() {
            let Some(position) = subscriptions.iter().position(|s| s.contains(key)) else {
                continue;
            };
            let Some(subscription) = subscriptions.get_mut(position) else { continue };
            subscription.retain(|k| k != key);
            let id = swap_keys_subscription(position);
            let Ok(relay) = self.inner.client.relay(url).await else { continue };
            let told = if subscription.is_empty() {
                relay.unsubscribe(&id).await
            } else {
                relay.subscribe_with_id(id, gift_wraps_to(subscription), Default::default()).await
            };
            if let Err(e) = told {
                // That relay may keep sending the key's gift wraps: dropped unread (not ours).
                tracing::debug!(relay = %url, error = %e, "cannot narrow a swap keys subscription");
            }
            while subscriptions.last().is_some_and(Vec::is_empty) {
                subscriptions.pop();
            }
        }
        listening.swap_keys.retain(|_, subscriptions| !subscriptions.is_empty());
        tracing::debug!(keys = lock(&self.inner.swap_keys).len(), "swap key removed");
    }

    /// Asks each relay of `targets` (in the pool, connecting) that is not asked yet for the gift
    /// wraps to `key`: the identity or a held swap key. A relay that refuses is not counted as
    /// asked (the next message as `key` there asks again).
    async fn listen(&self, key: PublicKey, targets: &[RelayUrl]) -> Result<(), TransportError> {
        let identity = self.inner.keys.public_key();
        let mut listening = self.inner.listening.lock().await;
        let mut failed = None;
        for url in targets {
            let relay = match self.inner.client.relay(url).await {
                Ok(r) => r,
                Err(e) => {
                    failed = Some(format!("{url}: {e}"));
                    continue;
                }
            };
            let (id, filter) = if key == identity {
                if !listening.identity.insert(url.clone()) {
                    continue;
                }
                (SubscriptionId::new(IDENTITY_SUBSCRIPTION), gift_wraps_to(&[key]))
            } else {
                let subscriptions = listening.swap_keys.entry(url.clone()).or_default();
                if subscriptions.iter().any(|s| s.contains(&key)) {
                    continue;
                }
                let position =
                    match subscriptions.iter().position(|s| s.len() < MAX_KEYS_PER_FILTER) {
                        Some(p) => p,
                        None => {
                            subscriptions.push(Vec::new());
                            subscriptions.len() - 1
                        }
                    };
                let Some(subscription) = subscriptions.get_mut(position) else { continue };
                subscription.push(key);
                (swap_keys_subscription(position), gift_wraps_to(subscription))
            };
            if let Err(e) = relay.subscribe_with_id(id, filter, Default::default()).await {
                tracing::debug!(relay = %url, error = %e, "cannot subscribe");
                failed = Some(format!("{url}: {e}"));
                if key == identity {
                    listening.identity.remove(url);
                } else if let Some(subscriptions) = listening.swap_keys.get_mut(url) {
                    // Sent again without it at the next change of that subscription.
                    for s in subscriptions.iter_mut() {
                        s.retain(|k| *k != key);
                    }
                }
            }
        }
        if key != identity {
            let on = listening.swap_keys.values().flatten().flatten().filter(|k| **k == key);
            tracing::debug!(relays = on.count(), "swap key read");
        }
        match failed {
            Some(reason) => Err(TransportError::Pool(reason)),
            None => Ok(()),
        }
    }

    /// The swap keys the transport holds besides the identity ([`NostrTransport::add_key`]).
    pub fn swap_keys(&self) -> Vec<PublicKey> {
        let mut keys: Vec<PublicKey> = lock(&self.inner.swap_keys).keys().copied().collect();
        keys.sort();
        keys
    }

    /// Our relays, as configured.
    pub fn relays(&self) -> Vec<String> {
        self.inner.our_relays.iter().map(|u| u.to_string()).collect()
    }

    /// The underlying nostr-sdk client (diagnostics and tests).
    pub fn client(&self) -> &Client {
        &self.inner.client
    }

    /// The stream of swap messages addressed to this node. Returns the receiver once; later
    /// calls return `None`.
    pub fn incoming(&self) -> Option<mpsc::Receiver<Incoming>> {
        self.inner.incoming.lock().ok().and_then(|mut g| g.take())
    }

    /// Marks an incoming event processed (only needed with [`TransportConfig::manual_ack`]).
    /// Returns `true` when it was not marked before.
    pub fn ack(&self, event_id: &EventId) -> Result<bool, TransportError> {
        Ok(self.inner.processed.mark_processed(event_id.to_bytes())?)
    }

    /// Says whether messages without proof of work may come to this node's identity. While not,
    /// and while every offer it serves asks for proof of work, a gift wrap to the identity with
    /// less than the least of it is dropped before it is decrypted (buyers mine every message to
    /// such a seller; spec `04-nostr.md`). Gift wraps to a swap key ([`NostrTransport::add_key`]:
    /// a buyer swap's, whose seller does not mine its answers) are never checked before
    /// decrypting. Starts `true` (checks after decrypting) until the engine, whose buyer swaps
    /// hear their sellers on their own keys, says otherwise.
    pub fn set_unmined_expected(&self, expected: bool) {
        self.inner.unmined_expected.store(expected, Ordering::Relaxed);
    }

    /// Current counters.
    pub async fn stats(&self) -> TransportStats {
        let c = &self.inner.counters;
        let mut s = TransportStats {
            received: c.received.load(Ordering::Relaxed),
            delivered: c.delivered.load(Ordering::Relaxed),
            duplicates: c.duplicates.load(Ordering::Relaxed),
            oversize: c.oversize.load(Ordering::Relaxed),
            invalid: c.invalid.load(Ordering::Relaxed),
            rate_limited: c.rate_limited.load(Ordering::Relaxed),
            insufficient_pow: c.insufficient_pow.load(Ordering::Relaxed),
            bytes_sent: 0,
            bytes_received: 0,
        };
        for relay in self.inner.client.relays().await.values() {
            let st = relay.stats();
            s.bytes_sent = s.bytes_sent.saturating_add(st.bytes_sent() as u64);
            s.bytes_received = s.bytes_received.saturating_add(st.bytes_received() as u64);
        }
        s
    }

    /// Disconnects from every relay and stops the background tasks.
    pub async fn shutdown(&self) {
        if let Ok(mut tasks) = self.inner.tasks.lock() {
            for t in tasks.drain(..) {
                t.abort();
            }
        }
        self.inner.client.shutdown().await;
    }

    // ----- swap messages -------------------------------------------------------------------

    /// Sends `envelope` to `peer` as a gift-wrapped swap message, to the peer's advertised relays
    /// (`relays_hint`, at most [`TransportConfig::max_hint_relays`]) and ours.
    pub async fn send(
        &self,
        peer: &PublicKey,
        relays_hint: &[String],
        envelope: &Envelope,
    ) -> Result<SendReport, TransportError> {
        self.send_with(peer, relays_hint, envelope, SendOptions::default()).await
    }

    /// As [`NostrTransport::send`], with proof of work or another lifetime.
    pub async fn send_with(
        &self,
        peer: &PublicKey,
        relays_hint: &[String],
        envelope: &Envelope,
        opts: SendOptions,
    ) -> Result<SendReport, TransportError> {
        self.send_content(peer, relays_hint, wire::envelope_content(envelope), opts).await
    }

    /// Sends `content` as the rumor's content, unchecked: a test hook to play a hostile peer
    /// (malformed or oversized messages). Only with the `test-utils` feature.
    #[cfg(feature = "test-utils")]
    pub async fn send_raw(
        &self,
        peer: &PublicKey,
        relays_hint: &[String],
        content: String,
        opts: SendOptions,
    ) -> Result<SendReport, TransportError> {
        self.send_content(peer, relays_hint, content, opts).await
    }

    async fn send_content(
        &self,
        peer: &PublicKey,
        relays_hint: &[String],
        content: String,
        opts: SendOptions,
    ) -> Result<SendReport, TransportError> {
        if content.len() > MAX_MESSAGE_BYTES {
            return Err(TransportError::TooLarge {
                what: "message",
                size: content.len(),
                max: MAX_MESSAGE_BYTES,
            });
        }
        let expiration = now_plus(opts.ttl.unwrap_or(self.inner.config.message_ttl));
        let sender = match opts.from {
            Some(key) if key != self.inner.keys.public_key() => lock(&self.inner.swap_keys)
                .get(&key)
                .cloned()
                .ok_or(TransportError::UnknownKey(key))?,
            _ => self.inner.keys.clone(),
        };
        let seal = wrap::build_seal(&sender, peer, content).await?;
        let receiver = *peer;
        let event = match opts.pow.filter(|d| *d > 0) {
            Some(d) => tokio::task::spawn_blocking(move || {
                wrap::wrap_seal(&receiver, &seal, expiration, Some(d))
            })
            .await
            .map_err(|e| TransportError::Encode(format!("pow task: {e}")))??,
            None => wrap::wrap_seal(&receiver, &seal, expiration, None)?,
        };
        let mut targets: Vec<RelayUrl> = Vec::new();
        for hint in relays_hint.iter().take(self.inner.config.max_hint_relays) {
            match parse_relay(hint) {
                Ok(url) => {
                    if !targets.contains(&url) {
                        targets.push(url);
                    }
                }
                Err(e) => tracing::debug!(error = %e, "ignoring peer relay hint"),
            }
        }
        for url in &self.inner.our_relays {
            if !targets.contains(url) {
                targets.push(url.clone());
            }
        }
        // The key is read where it speaks: the peer answers on its relays.
        self.add_relays(&targets).await;
        if let Err(e) = self.listen(sender.public_key(), &targets).await {
            tracing::debug!(error = %e, "not every relay reads the sending key yet");
        }
        self.deliver(&event, targets).await
    }

    /// Publishes `event` to `targets` (adding unknown relays to the pool) and returns as soon as
    /// one relay has accepted it; retries until [`TransportConfig::send_timeout`].
    async fn deliver(
        &self,
        event: &Event,
        targets: Vec<RelayUrl>,
    ) -> Result<SendReport, TransportError> {
        let client = &self.inner.client;
        self.add_relays(&targets).await;
        let timeout = self.inner.config.send_timeout;
        let event_bytes = wrap::event_size(event);
        match send_until_accepted(client, &targets, event, timeout).await {
            Ok(url) => {
                Ok(SendReport { event_id: event.id, event_bytes, accepted_by: url, targets })
            }
            Err(last_error) => {
                Err(TransportError::NotDelivered { event_id: event.id, timeout, last_error })
            }
        }
    }

    /// Adds the relays of `targets` the pool does not have yet, and connects them.
    async fn add_relays(&self, targets: &[RelayUrl]) {
        let client = &self.inner.client;
        for url in targets {
            match client.pool().add_relay(url.clone(), self.inner.relay_opts.clone()).await {
                Ok(true) => {
                    if let Err(e) = client.connect_relay(url.clone()).await {
                        tracing::debug!(relay = %url, error = %e, "cannot connect peer relay");
                    }
                }
                Ok(false) => {}
                Err(e) => tracing::debug!(relay = %url, error = %e, "cannot add peer relay"),
            }
        }
    }

    // ----- offers --------------------------------------------------------------------------

    fn next_offer_time(&self, offer_id: &str) -> Timestamp {
        let now = Timestamp::now();
        match self.inner.last_offer_time.lock() {
            Ok(mut m) => {
                let t = match m.get(offer_id) {
                    Some(last) if *last >= now => Timestamp::from_secs(last.as_secs() + 1),
                    _ => now,
                };
                m.insert(offer_id.to_string(), t);
                t
            }
            Err(_) => now,
        }
    }

    async fn publish_offer_event(&self, offer: &Offer) -> Result<SendReport, TransportError> {
        let created_at = self.next_offer_time(&offer.offer_id);
        let expiration = now_plus(self.inner.config.offer_ttl);
        let event = offers::offer_event_builder(offer, expiration, created_at)
            .sign_with_keys(&self.inner.keys)
            .map_err(|e| TransportError::Encode(e.to_string()))?;
        if event.content.len() > MAX_OFFER_BYTES {
            return Err(TransportError::TooLarge {
                what: "offer",
                size: event.content.len(),
                max: MAX_OFFER_BYTES,
            });
        }
        self.deliver(&event, self.inner.our_relays.clone()).await
    }

    /// Publishes `offer` (addressable event, `d` = offer id, `expiration` = now +
    /// [`TransportConfig::offer_ttl`], also written into the offer's `expires_at`) and remembers it
    /// for [`NostrTransport::refresh_offers`]. Its `pow_difficulty` is then demanded from every
    /// `swap_request` that takes it.
    pub async fn publish_offer(&self, offer: &Offer) -> Result<SendReport, TransportError> {
        let report = self.publish_offer_event(offer).await?;
        self.inner.offers.lock().await.insert(offer.offer_id.clone(), offer.clone());
        Ok(report)
    }

    /// Republishes every remembered offer with a new expiration. Returns how many were published.
    pub async fn refresh_offers(&self) -> Result<usize, TransportError> {
        let offers: Vec<Offer> = self.inner.offers.lock().await.values().cloned().collect();
        let mut n = 0;
        for offer in &offers {
            self.publish_offer_event(offer).await?;
            n += 1;
        }
        Ok(n)
    }

    /// Runs [`NostrTransport::refresh_offers`] every `interval` until the handle is dropped.
    pub fn spawn_refresher(&self, interval: Duration) -> RefreshHandle {
        let this = self.clone();
        RefreshHandle(tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.tick().await;
            loop {
                tick.tick().await;
                if let Err(e) = this.refresh_offers().await {
                    tracing::warn!(error = %e, "offer refresh failed");
                }
            }
        }))
    }

    /// Withdraws an offer: publishes an empty replacement (same `d`, short expiry) for relays that
    /// ignore deletions, then a NIP-09 deletion of the address, and stops refreshing it.
    pub async fn withdraw_offer(&self, offer_id: &str) -> Result<(), TransportError> {
        self.inner.offers.lock().await.remove(offer_id);
        let created_at = self.next_offer_time(offer_id);
        let replacement = offers::withdrawn_event_builder(
            offer_id,
            now_plus(Duration::from_secs(60)),
            created_at,
        )
        .sign_with_keys(&self.inner.keys)
        .map_err(|e| TransportError::Encode(e.to_string()))?;
        self.deliver(&replacement, self.inner.our_relays.clone()).await?;
        let deletion_time = self.next_offer_time(offer_id);
        let coordinate =
            Coordinate::new(Kind::Custom(OFFER_KIND), self.public_key()).identifier(offer_id);
        let deletion = EventBuilder::delete(
            EventDeletionRequest::new().coordinate(coordinate).reason("offer withdrawn"),
        )
        .custom_created_at(deletion_time)
        .sign_with_keys(&self.inner.keys)
        .map_err(|e| TransportError::Encode(e.to_string()))?;
        self.deliver(&deletion, self.inner.our_relays.clone()).await?;
        Ok(())
    }

    /// Fetches offers from our relays and returns the valid ones for `filter`, cheapest first.
    ///
    /// Dropped: expired, malformed, oversize, wrong network, amount out of range, and every
    /// version of an offer but the newest.
    pub async fn discover_offers(
        &self,
        filter: &OfferFilter,
    ) -> Result<Vec<DiscoveredOffer>, TransportError> {
        let events = self
            .inner
            .client
            .fetch_events_from(
                self.inner.our_relays.clone(),
                offers::offer_relay_filter(filter),
                self.inner.config.fetch_timeout,
            )
            .await
            .map_err(|e| TransportError::Pool(e.to_string()))?;
        Ok(offers::select_offers(events.iter(), filter, Timestamp::now()))
    }
}

/// The receiving task: filters, opens, checks and delivers gift wraps.
struct Receiver {
    inner: Arc<Inner>,
    tx: mpsc::Sender<Incoming>,
    seen: HashSet<EventId>,
    seen_order: VecDeque<EventId>,
    requests: RateLimiter<PublicKey>,
    messages: RateLimiter<PublicKey>,
}

impl Receiver {
    fn new(inner: Arc<Inner>, tx: mpsc::Sender<Incoming>) -> Self {
        let requests = RateLimiter::new(inner.config.request_rate_limit);
        let messages = RateLimiter::new(inner.config.message_rate_limit);
        Self { inner, tx, seen: HashSet::new(), seen_order: VecDeque::new(), requests, messages }
    }

    async fn run(mut self, mut notifications: broadcast::Receiver<RelayPoolNotification>) {
        // A safety net under the subscription: every REFETCH_INTERVAL the recent gift wraps are
        // asked for again (a connection that stalled - a process stopped for a while, a relay that
        // dropped the subscription - must not cost a message). Seen ids are dropped before they
        // are opened, so this costs little.
        let mut safety = tokio::time::interval(REFETCH_INTERVAL);
        safety.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        safety.tick().await;
        loop {
            let notification = tokio::select! {
                n = notifications.recv() => n,
                _ = safety.tick() => {
                    let since = Timestamp::now() - REFETCH_WINDOW;
                    if !self.refetch(Some(since)).await {
                        break;
                    }
                    continue;
                }
            };
            match notification {
                Ok(RelayPoolNotification::Event { relay_url, event, .. }) => {
                    if !self.handle(relay_url, *event).await {
                        break;
                    }
                }
                Ok(RelayPoolNotification::Shutdown) => break,
                Ok(RelayPoolNotification::Message { .. }) => {}
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    tracing::warn!(missed = n, "relay notifications lagged; refetching gift wraps");
                    if !self.refetch(None).await {
                        break;
                    }
                }
                Err(broadcast::error::RecvError::Closed) => break,
            }
        }
        tracing::debug!("nostr receiver stopped");
    }

    /// Asks our relays again for the gift wraps addressed to us (all of them, or those dated
    /// from `since`: NIP-59 dates a wrap up to two days in the past, so a window must be wider).
    /// Every key of the node is asked for (the identity and the swap keys, at most
    /// [`MAX_KEYS_PER_FILTER`] per request).
    async fn refetch(&mut self, since: Option<Timestamp>) -> bool {
        let mut keys = vec![self.inner.keys.public_key()];
        keys.extend(lock(&self.inner.swap_keys).keys().copied());
        for chunk in keys.chunks(MAX_KEYS_PER_FILTER) {
            let mut filter = gift_wraps_to(chunk);
            if let Some(since) = since {
                filter = filter.since(since);
            }
            let fetched = self
                .inner
                .client
                .fetch_events_from(
                    self.inner.our_relays.clone(),
                    filter,
                    self.inner.config.fetch_timeout,
                )
                .await;
            match fetched {
                Ok(events) => {
                    let relay = self.inner.our_relays.first().cloned();
                    for event in events {
                        if let Some(relay) = relay.clone() {
                            if !self.handle(relay, event).await {
                                return false;
                            }
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %e, "refetching gift wraps failed"),
            }
        }
        true
    }

    /// The key of this node a gift wrap is addressed to (its `p` tag): the identity or a swap
    /// key.
    fn recipient(&self, event: &Event) -> Option<Keys> {
        let me = self.inner.keys.public_key();
        let swap_keys = lock(&self.inner.swap_keys);
        event.tags.public_keys().find_map(|p| {
            if *p == me {
                Some(self.inner.keys.clone())
            } else {
                swap_keys.get(p).cloned()
            }
        })
    }

    fn remember(&mut self, id: EventId) -> bool {
        if !self.seen.insert(id) {
            return false;
        }
        self.seen_order.push_back(id);
        if self.seen_order.len() > SEEN_CAPACITY {
            if let Some(old) = self.seen_order.pop_front() {
                self.seen.remove(&old);
            }
        }
        true
    }

    /// Handles one event; returns `false` when the consumer is gone.
    async fn handle(&mut self, relay: RelayUrl, event: Event) -> bool {
        if event.kind != Kind::GiftWrap {
            return true;
        }
        let Some(recipient) = self.recipient(&event) else { return true };
        let to_identity = recipient.public_key() == self.inner.keys.public_key();
        let inner = Arc::clone(&self.inner);
        let c = &inner.counters;
        bump(&c.received);
        let size = wrap::event_size(&event);
        if size > self.inner.config.max_event_bytes {
            bump(&c.oversize);
            // One short line per event (refetches of it are remembered), never its content.
            if self.remember(event.id) {
                let max = self.inner.config.max_event_bytes;
                tracing::warn!(event_id = %event.id, size, max, %relay, "gift wrap too large: dropped unread");
            }
            return true;
        }
        if !self.remember(event.id) {
            bump(&c.duplicates);
            return true;
        }
        let id_bytes = event.id.to_bytes();
        match self.inner.processed.is_processed(id_bytes) {
            Ok(true) => {
                bump(&c.duplicates);
                return true;
            }
            Ok(false) => {}
            Err(e) => tracing::warn!(error = %e, "processed-events store unavailable"),
        }
        if to_identity && !self.inner.unmined_expected.load(Ordering::Relaxed) {
            // Every message to this node's identity must carry the work: check it before
            // decrypting. (A swap key hears only its seller's answers, which are not mined.)
            let (floor, bits) = (pow_floor(&inner).await, wrap::committed_pow(&event));
            if bits < floor {
                bump(&c.insufficient_pow);
                tracing::debug!(event_id = %event.id, bits, floor, "gift wrap without enough proof of work: dropped unread");
                self.mark(id_bytes);
                return true;
            }
        }
        let opened = match wrap::open_gift_wrap(&recipient, &event).await {
            Ok(o) => o,
            Err(e) => {
                bump(&c.invalid);
                tracing::debug!(event_id = %event.id, error = %e, "dropping gift wrap");
                self.mark(id_bytes);
                return true;
            }
        };
        if opened.content.len() > MAX_MESSAGE_BYTES {
            bump(&c.oversize);
            self.mark(id_bytes);
            return true;
        }
        if !self.messages.check(&opened.sender) {
            bump(&c.rate_limited);
            tracing::debug!(sender = %opened.sender, "message rate limit");
            self.mark(id_bytes);
            return true;
        }
        let pow_bits = wrap::committed_pow(&event);
        let message = wire::decode_envelope(opened.content.as_bytes());
        if let Ok(envelope) = &message {
            if wire::is_swap_request(envelope) {
                let offer_pow = match wire::requested_offer_id(envelope) {
                    Some(id) => inner.offers.lock().await.get(id).and_then(|o| o.pow_difficulty),
                    None => None,
                };
                let required =
                    self.inner.config.pow_difficulty.unwrap_or(0).max(offer_pow.unwrap_or(0));
                if pow_bits < required {
                    bump(&c.insufficient_pow);
                    tracing::debug!(sender = %opened.sender, pow_bits, required, "swap request without enough proof of work");
                    self.mark(id_bytes);
                    return true;
                }
                if !self.requests.check(&opened.sender) {
                    bump(&c.rate_limited);
                    tracing::debug!(sender = %opened.sender, "swap request rate limit");
                    self.mark(id_bytes);
                    return true;
                }
            }
        }
        if !self.inner.config.manual_ack {
            match self.inner.processed.mark_processed(id_bytes) {
                Ok(true) => {}
                Ok(false) => {
                    bump(&c.duplicates);
                    return true;
                }
                Err(e) => tracing::warn!(error = %e, "cannot persist processed event id"),
            }
        }
        bump(&c.delivered);
        let incoming = Incoming {
            sender: opened.sender,
            recipient: recipient.public_key(),
            event_id: event.id,
            relay,
            created_at: opened.created_at,
            pow_bits,
            message,
        };
        self.tx.send(incoming).await.is_ok()
    }

    fn mark(&self, id: [u8; 32]) {
        if let Err(e) = self.inner.processed.mark_processed(id) {
            tracing::warn!(error = %e, "cannot persist processed event id");
        }
    }
}

/// The subscription id of a relay's swap keys at `position` of [`Listening::swap_keys`].
fn swap_keys_subscription(position: usize) -> SubscriptionId {
    SubscriptionId::new(format!("{SWAP_KEYS_SUBSCRIPTION}{position}"))
}

/// The gift wraps addressed to any of `keys`.
fn gift_wraps_to(keys: &[PublicKey]) -> Filter {
    Filter::new().kind(Kind::GiftWrap).pubkeys(keys.iter().copied())
}

/// A short lock: a panic while holding it leaves plain data behind, so keep going.
fn lock<T>(m: &StdMutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The proof of work every gift wrap to this node must carry to be decrypted (while it expects
/// no unmined message): the node-wide requirement and the least any of its offers asks (0: none).
async fn pow_floor(inner: &Inner) -> u8 {
    let global = inner.config.pow_difficulty.unwrap_or(0);
    let least = inner.offers.lock().await.values().map(|o| o.pow_difficulty.unwrap_or(0)).min();
    least.map_or(global, |l| l.max(global))
}

/// Sends `event` to every relay of `targets` (already in `client`'s pool) and returns the first
/// that accepted it (`OK true`); the others keep trying in the background. Sends again with a
/// backoff (200 ms doubling to 2 s) until `timeout`. The swap messages and the backups publish
/// through it.
///
/// # Errors
/// The last relay's refusal (or "no relay") when none accepted it in time.
pub(crate) async fn send_until_accepted(
    client: &Client,
    targets: &[RelayUrl],
    event: &Event,
    timeout: Duration,
) -> Result<RelayUrl, String> {
    let deadline = Instant::now() + timeout;
    let mut backoff = Duration::from_millis(200);
    let mut last_error = String::from("no relay");
    loop {
        let (tx, mut rx) = mpsc::channel(targets.len().max(1));
        for url in targets {
            let relay = match client.relay(url.clone()).await {
                Ok(r) => r,
                Err(e) => {
                    last_error = format!("{url}: {e}");
                    continue;
                }
            };
            let tx = tx.clone();
            let event = event.clone();
            let url = url.clone();
            tokio::spawn(async move {
                let res = relay.send_event(&event).await.map_err(|e| e.to_string());
                let _ = tx.send((url, res)).await;
            });
        }
        drop(tx);
        let remaining = deadline.saturating_duration_since(Instant::now());
        let first_ok = tokio::time::timeout(remaining, async {
            while let Some((url, res)) = rx.recv().await {
                match res {
                    Ok(_) => return Some(url),
                    Err(e) => {
                        tracing::debug!(relay = %url, error = %e, event_id = %event.id, "relay refused event");
                        last_error = format!("{url}: {e}");
                    }
                }
            }
            None
        })
        .await;
        if let Ok(Some(url)) = first_ok {
            return Ok(url);
        }
        if Instant::now() + backoff >= deadline {
            return Err(last_error);
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
}
