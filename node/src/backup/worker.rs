//! The background publisher: swap records and offers are published as they are persisted
//! (coalesced per record, retried with a backoff, never blocking the caller), and index
//! reservations are published on request (the caller waits for one relay's acceptance).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use nostr_sdk::Timestamp;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::codec::{encode_event, BackupKeys, Payload};
use super::relays::BackupRelays;
use super::BackupError;

/// Settings of the publisher.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PublisherOptions {
    /// How long one publication of a record may wait for a relay's acceptance before it is
    /// retried later.
    pub publish_timeout: Duration,
    /// How long an index reservation may wait for a relay's acceptance.
    pub reserve_timeout: Duration,
    /// First retry delay after a failed publication (doubling up to `max_backoff`).
    pub min_backoff: Duration,
    /// Longest retry delay.
    pub max_backoff: Duration,
}

impl Default for PublisherOptions {
    fn default() -> Self {
        PublisherOptions {
            publish_timeout: Duration::from_secs(10),
            reserve_timeout: Duration::from_secs(10),
            min_backoff: Duration::from_secs(5),
            max_backoff: Duration::from_secs(60),
        }
    }
}

enum Job {
    Put(Payload),
    Flush(oneshot::Sender<usize>),
}

enum Reply {
    Blocking(std::sync::mpsc::SyncSender<Result<(), String>>),
    Async(oneshot::Sender<Result<(), String>>),
}

struct ReserveJob {
    up_to: u32,
    reply: Reply,
}

/// The handle the store wrapper uses to publish backups. Cheap to clone.
#[derive(Clone)]
pub struct BackupHandle {
    jobs: mpsc::UnboundedSender<Job>,
    reservations: mpsc::UnboundedSender<ReserveJob>,
    options: PublisherOptions,
}

impl std::fmt::Debug for BackupHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackupHandle").field("options", &self.options).finish()
    }
}

/// The publisher's tasks (stopped when dropped).
#[derive(Debug)]
pub struct PublisherTasks {
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for PublisherTasks {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl BackupHandle {
    /// Queues `payload` for publication and returns at once. A newer payload with the same label
    /// replaces a queued older one.
    pub fn submit(&self, payload: Payload) {
        if self.jobs.send(Job::Put(payload)).is_err() {
            tracing::debug!("backup publisher stopped: backup not queued");
        }
    }

    /// Publishes the index mark `up_to` and waits, blocking the thread, until a relay accepted it
    /// (at most the reservation timeout). For synchronous callers (the store); call it from a
    /// blocking context, never from a current-thread runtime's only thread.
    ///
    /// # Errors
    /// [`BackupError::NotDelivered`], [`BackupError::Stopped`], [`BackupError::Timeout`].
    pub fn reserve_blocking(&self, up_to: u32) -> Result<(), BackupError> {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.reservations
            .send(ReserveJob { up_to, reply: Reply::Blocking(tx) })
            .map_err(|_| BackupError::Stopped)?;
        // The publisher's own timeout comes first; this one covers a stalled runtime.
        let wait = self.options.reserve_timeout.saturating_add(Duration::from_secs(5));
        match rx.recv_timeout(wait) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(BackupError::NotDelivered {
                timeout: self.options.reserve_timeout,
                last_error: e,
            }),
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => Err(BackupError::Timeout),
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => Err(BackupError::Stopped),
        }
    }

    /// [`BackupHandle::reserve_blocking`] for async callers.
    ///
    /// # Errors
    /// As [`BackupHandle::reserve_blocking`].
    pub async fn reserve(&self, up_to: u32) -> Result<(), BackupError> {
        self.reserve_queued(up_to).await
    }

    /// [`BackupHandle::reserve`], queued at once: the reservation is asked for before this
    /// returns (after those asked for before it, before those asked for after it); the future
    /// waits for its outcome.
    pub fn reserve_queued(
        &self,
        up_to: u32,
    ) -> impl std::future::Future<Output = Result<(), BackupError>> + Send + 'static {
        let (tx, rx) = oneshot::channel();
        let queued = self
            .reservations
            .send(ReserveJob { up_to, reply: Reply::Async(tx) })
            .map_err(|_| BackupError::Stopped);
        let timeout = self.options.reserve_timeout;
        async move {
            queued?;
            match rx.await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(BackupError::NotDelivered { timeout, last_error: e }),
                Err(_) => Err(BackupError::Stopped),
            }
        }
    }

    /// Tries to publish everything queued, waiting at most `timeout`; returns how many payloads
    /// are still unpublished (0: all reached a relay). Called at shutdown.
    pub async fn flush(&self, timeout: Duration) -> usize {
        let (tx, rx) = oneshot::channel();
        if self.jobs.send(Job::Flush(tx)).is_err() {
            return 0;
        }
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(left)) => left,
            _ => usize::MAX,
        }
    }
}

/// Starts the publisher on `relays` with `keys`. Must run inside a tokio runtime.
pub fn spawn_publisher(
    relays: Arc<BackupRelays>,
    keys: BackupKeys,
    options: PublisherOptions,
) -> (BackupHandle, PublisherTasks) {
    let (jobs_tx, jobs_rx) = mpsc::unbounded_channel();
    let (res_tx, res_rx) = mpsc::unbounded_channel();
    let records = Records {
        relays: Arc::clone(&relays),
        keys: keys.clone(),
        options,
        pending: BTreeMap::new(),
        last_time: HashMap::new(),
        retry_at: None,
        failures: 0,
        flushers: Vec::new(),
    };
    let reserver = Reserver { relays, keys, options, published: 0, last_time: 0 };
    let tasks = vec![tokio::spawn(records.run(jobs_rx)), tokio::spawn(reserver.run(res_rx))];
    (BackupHandle { jobs: jobs_tx, reservations: res_tx, options }, PublisherTasks { tasks })
}

/// `created_at` for a new version of an addressable event last published at `last` (UNIX
/// seconds): now, strictly after `last`, waiting for the next second when needed so that relays
/// keep the newer version (same second: NIP-01 keeps the lowest id, not the newest).
async fn next_time(last: u64) -> u64 {
    loop {
        let now = Timestamp::now().as_secs();
        if now > last {
            return now;
        }
        tokio::time::sleep(Duration::from_millis(1_050 - now_millis() % 1_000)).await;
    }
}

fn now_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(0))
        .unwrap_or(0)
}

struct Reserver {
    relays: Arc<BackupRelays>,
    keys: BackupKeys,
    options: PublisherOptions,
    /// Highest mark a relay accepted in this process.
    published: u32,
    last_time: u64,
}

impl Reserver {
    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<ReserveJob>) {
        while let Some(job) = rx.recv().await {
            let res =
                if job.up_to <= self.published { Ok(()) } else { self.publish(job.up_to).await };
            match job.reply {
                Reply::Blocking(tx) => {
                    let _ = tx.try_send(res);
                }
                Reply::Async(tx) => {
                    let _ = tx.send(res);
                }
            }
        }
    }

    async fn publish(&mut self, up_to: u32) -> Result<(), String> {
        let created_at = next_time(self.last_time).await;
        let payload = Payload::Index { reserved_index: up_to };
        let event = encode_event(&self.keys, &payload, Timestamp::from_secs(created_at))
            .map_err(|e| e.to_string())?;
        match self.relays.publish(&event, self.options.reserve_timeout).await {
            Ok(relay) => {
                self.last_time = created_at;
                self.published = self.published.max(up_to);
                tracing::info!(reserved_index = up_to, %relay, "swap index block reserved in the backups");
                Ok(())
            }
            Err(e) => {
                // A later attempt must still date after this one (it may have reached a relay).
                self.last_time = created_at;
                tracing::warn!(reserved_index = up_to, error = %e, "cannot reserve swap indices in the backups");
                Err(e.to_string())
            }
        }
    }
}

struct Pending {
    payload: Payload,
    failures: u32,
    warned: bool,
}

struct Records {
    relays: Arc<BackupRelays>,
    keys: BackupKeys,
    options: PublisherOptions,
    /// Unpublished payloads by label (the newest per label).
    pending: BTreeMap<String, Pending>,
    /// `created_at` of the last publication per label.
    last_time: HashMap<String, u64>,
    /// After a failed publication nothing is tried before this (the relays are likely down).
    retry_at: Option<Instant>,
    /// Consecutive failed publications (sets the backoff).
    failures: u32,
    flushers: Vec<oneshot::Sender<usize>>,
}

impl Records {
    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Job>) {
        loop {
            let job = match self.next_wake() {
                None => match rx.recv().await {
                    Some(job) => Some(job),
                    None => break,
                },
                Some(at) => tokio::select! {
                    j = rx.recv() => match j {
                        Some(job) => Some(job),
                        None => break,
                    },
                    _ = tokio::time::sleep_until(at) => None,
                },
            };
            if let Some(job) = job {
                self.take(job);
            }
            while let Ok(job) = rx.try_recv() {
                self.take(job);
            }
            self.publish_due().await;
            self.answer_flushers();
        }
    }

    fn take(&mut self, job: Job) {
        match job {
            Job::Put(payload) => {
                let label = payload.label();
                let (failures, warned) =
                    self.pending.get(&label).map(|p| (p.failures, p.warned)).unwrap_or((0, false));
                self.pending.insert(label, Pending { payload, failures, warned });
            }
            Job::Flush(tx) => self.flushers.push(tx),
        }
    }

    /// When the loop must look again without new input: after the backoff, or at the next
    /// second for a payload already published in this one.
    fn next_wake(&self) -> Option<Instant> {
        if self.pending.is_empty() {
            return None;
        }
        if let Some(at) = self.retry_at {
            return Some(at);
        }
        Some(Instant::now() + Duration::from_millis(250))
    }

    /// Publishes every due payload; stops at the first failure (the relays are likely down: the
    /// rest waits for the backoff).
    async fn publish_due(&mut self) {
        if self.retry_at.is_some_and(|at| at > Instant::now()) {
            return;
        }
        self.retry_at = None;
        let labels: Vec<String> = self.pending.keys().cloned().collect();
        for label in labels {
            let now_secs = Timestamp::now().as_secs();
            if self.last_time.get(&label).is_some_and(|t| *t >= now_secs) {
                continue; // published this second: the next version waits for the next one
            }
            let Some(p) = self.pending.get(&label) else { continue };
            let payload = p.payload.clone();
            let event = match encode_event(&self.keys, &payload, Timestamp::from_secs(now_secs)) {
                Ok(e) => e,
                Err(e) => {
                    tracing::warn!(backup = %payload.describe(), error = %e, "cannot encode a backup: not published");
                    self.pending.remove(&label);
                    continue;
                }
            };
            // Dated even when no relay confirms: it may have reached one.
            self.last_time.insert(label.clone(), now_secs);
            match self.relays.publish(&event, self.options.publish_timeout).await {
                Ok(relay) => {
                    self.failures = 0;
                    // A newer version may have been queued meanwhile: keep that one.
                    let newer = self.pending.get(&label).is_some_and(|q| q.payload != payload);
                    if !newer {
                        if let Some(done) = self.pending.remove(&label) {
                            if done.warned {
                                tracing::info!(backup = %payload.describe(), %relay, "backup published after earlier failures");
                            }
                        }
                    }
                    tracing::debug!(backup = %payload.describe(), %relay, bytes = event.content.len(), "backup published");
                }
                Err(e) => {
                    self.failures = self.failures.saturating_add(1);
                    let factor = 1u32 << self.failures.saturating_sub(1).min(8);
                    let delay = self
                        .options
                        .min_backoff
                        .saturating_mul(factor)
                        .min(self.options.max_backoff);
                    self.retry_at = Some(Instant::now() + delay);
                    if let Some(p) = self.pending.get_mut(&label) {
                        p.failures = p.failures.saturating_add(1);
                        if !p.warned {
                            p.warned = true;
                            tracing::warn!(backup = %payload.describe(), error = %e, "cannot publish a backup; retrying in the background");
                        }
                    }
                    break;
                }
            }
        }
    }

    /// Answers the flush callers once nothing more can be published now: everything published,
    /// or the relays failing (backoff running).
    fn answer_flushers(&mut self) {
        if self.flushers.is_empty() {
            return;
        }
        if !self.pending.is_empty() && self.retry_at.is_none() {
            return; // waiting for the next second only
        }
        let left = self.pending.len();
        for tx in self.flushers.drain(..) {
            let _ = tx.send(left);
        }
    }
}
