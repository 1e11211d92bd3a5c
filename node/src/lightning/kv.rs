//! ldk-node's key-value store with group commit: the same SQLite file, table and rows as
//! ldk-node's own `SqliteStore`, but the writes of concurrent callers share one transaction and
//! one durable commit.
//!
//! ldk-node's store runs every write (a channel monitor update, the channel manager, each
//! invoice's payment record) as its own transaction on one connection behind one lock, so a node
//! with many payments in flight queues them one fsync after the other: on a seller answering a
//! burst of swap requests, each invoice waited behind the monitor updates of the payments already
//! arriving (`docs/benchmarks.md`, "One seller, 500 concurrent swaps"). Here every write or
//! removal is queued, in the order of the calls, to one writer thread; the writer takes whatever
//! is queued, applies it in one transaction and commits it, then tells each caller. Writes queued
//! while it commits go into its next transaction; a lone write is committed at once.
//!
//! What LDK asks of a store holds:
//! - durable before it returns: a caller (and an async write's future) learns its outcome only
//!   after the commit that holds its write; the database is in write-ahead-log mode with
//!   `synchronous = FULL`, so the log is synced at every commit;
//! - order: writes and removals are applied in the order the calls were made (the queue is taken
//!   in order by one thread), for the same key and across keys, so an async write's order is fixed
//!   when it is called, not when its future is polled;
//! - reads see every write whose call returned (a separate read connection; each read is its own
//!   transaction over the committed state);
//! - a statement that fails is reported to its caller only: SQLite rolls back that statement and
//!   the transaction goes on; a commit that fails fails every write of the transaction.
//!
//! One exception, asked for by the caller: the writes to ldk-node's payment store ([`PAYMENTS`])
//! made inside [`defer_commits`] return once queued, and the caller awaits them together
//! afterwards ([`Deferred::durable`]). ldk-node holds its payment store's lock while it writes a
//! record, so a burst of invoices otherwise takes one commit each, one after the other; deferred,
//! the lock is let go at once and the invoices of a burst share commits, while each call that
//! made them still returns only once its records are durable (`LdkLightning` awaits them before
//! it answers). Reads wait for any deferred write still in the queue, so a read still sees every
//! write whose call returned. Channel monitors and the channel manager are never deferred: LDK
//! acts on their persistence (messages to the peer) as soon as the write returns.
//!
//! The file stays ldk-node's: [`GroupSqliteStore::open`] lets ldk-node's `SqliteStore` create or
//! migrate the schema first, so a node can go back to ldk-node's stock store and read everything.

use std::cell::RefCell;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use ldk_node::io::sqlite_store::{SqliteStore, KV_TABLE_NAME, SQLITE_DB_FILE_NAME};
use ldk_node::lightning::io;
use ldk_node::lightning::util::async_poll::AsyncResult;
use ldk_node::lightning::util::persist::{
    KVStore, KVStoreSync, KVSTORE_NAMESPACE_KEY_ALPHABET, KVSTORE_NAMESPACE_KEY_MAX_LEN,
};
use rusqlite::{named_params, Connection, OptionalExtension};

/// How long a connection waits for a lock another connection holds before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// ldk-node's payment store (its primary namespace, `PAYMENT_INFO_PERSISTENCE_PRIMARY_NAMESPACE`):
/// the only writes [`defer_commits`] defers.
pub const PAYMENTS: &str = "payments";

/// A change queued to the writer.
enum Change {
    Write {
        primary: String,
        secondary: String,
        key: String,
        value: Vec<u8>,
    },
    Remove {
        primary: String,
        secondary: String,
        key: String,
    },
    /// Nothing: answered once everything queued before it is committed.
    Barrier,
}

impl Change {
    /// A write or removal in ldk-node's payment store.
    fn is_payment(&self) -> bool {
        match self {
            Change::Write { primary, .. } | Change::Remove { primary, .. } => primary == PAYMENTS,
            Change::Barrier => false,
        }
    }
}

thread_local! {
    /// The outcomes of this thread's deferred writes, inside [`defer_commits`].
    static DEFERRED: RefCell<Option<Vec<tokio::sync::oneshot::Receiver<io::Result<()>>>>> =
        const { RefCell::new(None) };
}

/// Runs `f` with the payment-store writes it makes on this thread deferred: each returns once
/// queued (its place in the order taken), and the returned [`Deferred`] resolves when they are
/// all durable. Other writes are not deferred. Whoever acts on what `f` did (an invoice handed
/// to a peer) awaits [`Deferred::durable`] first.
pub fn defer_commits<R>(f: impl FnOnce() -> R) -> (R, Deferred) {
    /// Puts back the scope that was there before, even when `f` panics (the thread is a pool's).
    struct Scope(Option<Vec<tokio::sync::oneshot::Receiver<io::Result<()>>>>);
    impl Drop for Scope {
        fn drop(&mut self) {
            let outer = self.0.take();
            DEFERRED.with(|d| *d.borrow_mut() = outer);
        }
    }
    let scope = Scope(DEFERRED.with(|d| d.borrow_mut().replace(Vec::new())));
    let out = f();
    let pending = DEFERRED.with(|d| d.borrow_mut().take()).unwrap_or_default();
    drop(scope);
    (out, Deferred(pending))
}

/// The deferred writes of one [`defer_commits`] call, not known to be durable yet. Dropping it
/// does not undo them: they are committed all the same.
#[must_use = "await `durable` before acting on what the deferred writes record"]
pub struct Deferred(Vec<tokio::sync::oneshot::Receiver<io::Result<()>>>);

impl Deferred {
    /// How many writes were deferred.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether nothing was deferred.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Resolves once every deferred write is durable.
    ///
    /// # Errors
    /// The first write that failed (or the writer stopped before committing it).
    pub async fn durable(self) -> io::Result<()> {
        let mut outcome = Ok(());
        for rx in self.0 {
            let result = rx.await.map_err(|_| stopped()).and_then(|r| r);
            if outcome.is_ok() {
                outcome = result;
            }
        }
        outcome
    }
}

/// Where the writer sends a change's outcome: a blocked thread (the sync API) or a future.
enum Reply {
    Blocking(mpsc::Sender<io::Result<()>>),
    Future(tokio::sync::oneshot::Sender<io::Result<()>>),
}

impl Reply {
    fn send(self, outcome: io::Result<()>) {
        // A caller that stopped waiting (a dropped future) needs no answer.
        match self {
            Reply::Blocking(tx) => drop(tx.send(outcome)),
            Reply::Future(tx) => drop(tx.send(outcome)),
        }
    }
}

struct Queued {
    change: Change,
    reply: Reply,
    /// Counted in [`GroupSqliteStore::unconfirmed`] until committed.
    deferred: bool,
}

/// ldk-node's SQLite key-value store, with the writes of concurrent callers committed together.
/// Dropping it lets the writer finish what is queued and waits for it.
pub struct GroupSqliteStore {
    queue: Option<mpsc::Sender<Queued>>,
    writer: Option<JoinHandle<()>>,
    reader: Mutex<Connection>,
    /// Deferred writes queued and not committed yet: reads wait for them first.
    unconfirmed: Arc<AtomicUsize>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn other(what: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::Other, what.to_string())
}

fn stopped() -> io::Error {
    other("the Lightning store's writer stopped")
}

fn connect(path: &Path) -> io::Result<Connection> {
    let db = Connection::open(path).map_err(|e| other(format!("open {}: {e}", path.display())))?;
    db.busy_timeout(BUSY_TIMEOUT).map_err(other)?;
    // Write-ahead log (kept by the file) and a log synced at every commit (per connection).
    let mode: String =
        db.query_row("PRAGMA journal_mode=WAL", [], |row| row.get(0)).map_err(other)?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(other(format!("the Lightning store stays in journal mode {mode}")));
    }
    db.execute_batch("PRAGMA synchronous=FULL").map_err(other)?;
    Ok(db)
}

impl GroupSqliteStore {
    /// Opens (or creates) `ldk_node_data.sqlite` in `dir`, ldk-node's file, and starts the writer.
    ///
    /// # Errors
    /// An I/O error naming what failed when the file cannot be opened, migrated or put in
    /// write-ahead-log mode, or the writer cannot start.
    pub fn open(dir: &Path) -> io::Result<GroupSqliteStore> {
        // ldk-node creates the table or migrates an older schema, exactly as it would itself.
        drop(SqliteStore::new(
            dir.to_path_buf(),
            Some(SQLITE_DB_FILE_NAME.to_string()),
            Some(KV_TABLE_NAME.to_string()),
        )?);
        let path = dir.join(SQLITE_DB_FILE_NAME);
        let writer_db = connect(&path)?;
        let reader = connect(&path)?;
        let (queue, changes) = mpsc::channel::<Queued>();
        let unconfirmed = Arc::new(AtomicUsize::new(0));
        let committed = Arc::clone(&unconfirmed);
        let writer = std::thread::Builder::new()
            .name("looper-ldk-writer".into())
            .spawn(move || {
                let mut db = writer_db;
                while let Ok(first) = changes.recv() {
                    let mut batch = vec![first];
                    batch.extend(changes.try_iter());
                    commit(&mut db, batch, &committed);
                }
            })
            .map_err(|e| other(format!("start the Lightning store's writer: {e}")))?;
        Ok(GroupSqliteStore {
            queue: Some(queue),
            writer: Some(writer),
            reader: Mutex::new(reader),
            unconfirmed,
        })
    }

    /// Queues `change`; the outcome goes to `reply`. The change's place in the order is fixed
    /// here, by the call.
    fn enqueue(&self, change: Change, reply: Reply, deferred: bool) -> Result<(), Reply> {
        match &self.queue {
            Some(q) => {
                q.send(Queued { change, reply, deferred }).map_err(|mpsc::SendError(q)| q.reply)
            }
            None => Err(reply),
        }
    }

    /// The sync API: waits for the commit, unless the change is a payment-store write inside
    /// [`defer_commits`] (then its outcome goes to the scope).
    fn change_blocking(&self, change: Change) -> io::Result<()> {
        if change.is_payment() && DEFERRED.with(|d| d.borrow().is_some()) {
            let (tx, rx) = tokio::sync::oneshot::channel();
            // Counted before it is queued: the writer may commit it at once.
            self.unconfirmed.fetch_add(1, Ordering::SeqCst);
            if self.enqueue(change, Reply::Future(tx), true).is_err() {
                self.unconfirmed.fetch_sub(1, Ordering::SeqCst);
                return Err(stopped());
            }
            DEFERRED.with(|d| {
                if let Some(pending) = d.borrow_mut().as_mut() {
                    pending.push(rx);
                }
            });
            return Ok(());
        }
        self.wait_for(change)
    }

    /// Queues `change` and waits for the commit that holds it.
    fn wait_for(&self, change: Change) -> io::Result<()> {
        let (tx, rx) = mpsc::channel();
        if self.enqueue(change, Reply::Blocking(tx), false).is_err() {
            return Err(stopped());
        }
        rx.recv().map_err(|_| stopped())?
    }

    /// Before a read: every deferred write queued so far is committed.
    fn settle_deferred(&self) -> io::Result<()> {
        if self.unconfirmed.load(Ordering::SeqCst) == 0 {
            return Ok(());
        }
        self.wait_for(Change::Barrier)
    }

    fn change_async(&self, change: Change) -> AsyncResult<'static, (), io::Error> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        if self.enqueue(change, Reply::Future(tx), false).is_err() {
            return Box::pin(std::future::ready(Err(stopped())));
        }
        Box::pin(async move { rx.await.map_err(|_| stopped())? })
    }

    fn read_now(&self, primary: &str, secondary: &str, key: &str) -> io::Result<Vec<u8>> {
        check(primary, secondary, Some(key), "read")?;
        self.settle_deferred()?;
        let db = lock(&self.reader);
        let sql = format!(
            "SELECT value FROM {KV_TABLE_NAME} WHERE primary_namespace=:p AND \
             secondary_namespace=:s AND key=:k;"
        );
        let mut stmt = db.prepare_cached(&sql).map_err(other)?;
        let value: Option<Option<Vec<u8>>> = stmt
            .query_row(named_params! { ":p": primary, ":s": secondary, ":k": key }, |row| {
                row.get(0)
            })
            .optional()
            .map_err(|e| other(format!("read {}: {e}", name(primary, secondary, key))))?;
        match value {
            Some(Some(v)) => Ok(v),
            // ldk-node's store writes no NULL values; one found reads as empty, as there.
            Some(None) => Ok(Vec::new()),
            None => Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("no key {}", name(primary, secondary, key)),
            )),
        }
    }

    fn list_now(&self, primary: &str, secondary: &str) -> io::Result<Vec<String>> {
        check(primary, secondary, None, "list")?;
        self.settle_deferred()?;
        let db = lock(&self.reader);
        let sql = format!(
            "SELECT key FROM {KV_TABLE_NAME} WHERE primary_namespace=:p AND \
             secondary_namespace=:s;"
        );
        let mut stmt = db.prepare_cached(&sql).map_err(other)?;
        let rows = stmt
            .query_map(named_params! { ":p": primary, ":s": secondary }, |row| row.get(0))
            .map_err(other)?;
        rows.collect::<Result<Vec<String>, _>>().map_err(other)
    }
}

impl Drop for GroupSqliteStore {
    fn drop(&mut self) {
        // The writer ends once the queue is closed and empty.
        drop(self.queue.take());
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
}

/// `primary/secondary/key`, for error messages (LDK's keys are ids and names, no secrets).
fn name(primary: &str, secondary: &str, key: &str) -> String {
    format!("{primary}/{secondary}/{key}")
}

/// LDK's rules for namespaces and keys (`KVStoreSync`): its alphabet, at most 120 characters,
/// a key not empty, no secondary namespace without a primary one.
fn check(primary: &str, secondary: &str, key: Option<&str>, op: &str) -> io::Result<()> {
    let valid = |s: &str| {
        s.len() <= KVSTORE_NAMESPACE_KEY_MAX_LEN
            && s.chars().all(|c| KVSTORE_NAMESPACE_KEY_ALPHABET.contains(c))
    };
    let fine = key.is_none_or(|k| !k.is_empty() && valid(k))
        && (secondary.is_empty() || !primary.is_empty())
        && valid(primary)
        && valid(secondary);
    if fine {
        Ok(())
    } else {
        Err(other(format!(
            "cannot {op} {}: not a valid namespace or key",
            name(primary, secondary, key.unwrap_or(""))
        )))
    }
}

/// Applies `batch` in one transaction and commits it, then answers each caller. Its deferred
/// writes leave `unconfirmed` once the transaction is over (committed or not), before anyone
/// is answered.
fn commit(db: &mut Connection, batch: Vec<Queued>, unconfirmed: &AtomicUsize) {
    let deferred = batch.iter().filter(|q| q.deferred).count();
    let settled = || unconfirmed.fetch_sub(deferred, Ordering::SeqCst);
    if let Err(e) = db.execute_batch("BEGIN IMMEDIATE") {
        settled();
        return fail_all(batch, &format!("begin a transaction: {e}"));
    }
    let outcomes: Vec<io::Result<()>> = batch.iter().map(|q| apply(db, &q.change)).collect();
    match db.execute_batch("COMMIT") {
        Ok(()) => {
            settled();
            for (q, outcome) in batch.into_iter().zip(outcomes) {
                q.reply.send(outcome);
            }
        }
        Err(e) => {
            // Nothing of the transaction is kept.
            let _ = db.execute_batch("ROLLBACK");
            settled();
            fail_all(batch, &format!("commit: {e}"));
        }
    }
}

fn fail_all(batch: Vec<Queued>, why: &str) {
    for q in batch {
        q.reply.send(Err(other(format!("the Lightning store could not {why}"))));
    }
}

/// One change, as a statement of the open transaction.
fn apply(db: &Connection, change: &Change) -> io::Result<()> {
    match change {
        Change::Write { primary, secondary, key, value } => {
            let sql = format!(
                "INSERT OR REPLACE INTO {KV_TABLE_NAME} (primary_namespace, secondary_namespace, \
                 key, value) VALUES (:p, :s, :k, :v);"
            );
            let mut stmt = db.prepare_cached(&sql).map_err(other)?;
            stmt.execute(named_params! { ":p": primary, ":s": secondary, ":k": key, ":v": value })
                .map(|_| ())
                .map_err(|e| other(format!("write {}: {e}", name(primary, secondary, key))))
        }
        Change::Remove { primary, secondary, key } => {
            let sql = format!(
                "DELETE FROM {KV_TABLE_NAME} WHERE primary_namespace=:p AND \
                 secondary_namespace=:s AND key=:k;"
            );
            let mut stmt = db.prepare_cached(&sql).map_err(other)?;
            stmt.execute(named_params! { ":p": primary, ":s": secondary, ":k": key })
                .map(|_| ())
                .map_err(|e| other(format!("remove {}: {e}", name(primary, secondary, key))))
        }
        Change::Barrier => Ok(()),
    }
}

fn write_change(primary: &str, secondary: &str, key: &str, value: Vec<u8>) -> io::Result<Change> {
    check(primary, secondary, Some(key), "write")?;
    Ok(Change::Write {
        primary: primary.to_string(),
        secondary: secondary.to_string(),
        key: key.to_string(),
        value,
    })
}

fn remove_change(primary: &str, secondary: &str, key: &str) -> io::Result<Change> {
    check(primary, secondary, Some(key), "remove")?;
    Ok(Change::Remove {
        primary: primary.to_string(),
        secondary: secondary.to_string(),
        key: key.to_string(),
    })
}

impl KVStoreSync for GroupSqliteStore {
    fn read(&self, primary: &str, secondary: &str, key: &str) -> io::Result<Vec<u8>> {
        self.read_now(primary, secondary, key)
    }

    fn write(&self, primary: &str, secondary: &str, key: &str, buf: Vec<u8>) -> io::Result<()> {
        self.change_blocking(write_change(primary, secondary, key, buf)?)
    }

    /// Removes at once, `lazy` or not (a lazy removal may be durable sooner than asked).
    fn remove(&self, primary: &str, secondary: &str, key: &str, _lazy: bool) -> io::Result<()> {
        self.change_blocking(remove_change(primary, secondary, key)?)
    }

    fn list(&self, primary: &str, secondary: &str) -> io::Result<Vec<String>> {
        self.list_now(primary, secondary)
    }
}

/// The async API: a write or removal takes its place in the order when called; its future
/// resolves when the commit holding it is durable. Reads and lists are answered at once (a read
/// of the committed state, under a millisecond, as ldk-node's store does on a blocking thread).
impl KVStore for GroupSqliteStore {
    fn read(
        &self,
        primary: &str,
        secondary: &str,
        key: &str,
    ) -> AsyncResult<'static, Vec<u8>, io::Error> {
        Box::pin(std::future::ready(self.read_now(primary, secondary, key)))
    }

    fn write(
        &self,
        primary: &str,
        secondary: &str,
        key: &str,
        buf: Vec<u8>,
    ) -> AsyncResult<'static, (), io::Error> {
        match write_change(primary, secondary, key, buf) {
            Ok(change) => self.change_async(change),
            Err(e) => Box::pin(std::future::ready(Err(e))),
        }
    }

    fn remove(
        &self,
        primary: &str,
        secondary: &str,
        key: &str,
        _lazy: bool,
    ) -> AsyncResult<'static, (), io::Error> {
        match remove_change(primary, secondary, key) {
            Ok(change) => self.change_async(change),
            Err(e) => Box::pin(std::future::ready(Err(e))),
        }
    }

    fn list(&self, primary: &str, secondary: &str) -> AsyncResult<'static, Vec<String>, io::Error> {
        Box::pin(std::future::ready(self.list_now(primary, secondary)))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::sync::Arc;

    use super::*;

    fn tmp() -> tempfile::TempDir {
        tempfile::tempdir().unwrap()
    }

    #[test]
    fn read_write_remove_list_as_ldk_expects() {
        let dir = tmp();
        let store = GroupSqliteStore::open(dir.path()).unwrap();
        let s = &store as &dyn KVStoreSync;
        assert_eq!(s.read("p", "s", "k").unwrap_err().kind(), io::ErrorKind::NotFound);
        assert!(s.list("p", "s").unwrap().is_empty());
        s.write("p", "s", "k", vec![1, 2, 3]).unwrap();
        s.write("p", "", "k", vec![4]).unwrap();
        assert_eq!(s.read("p", "s", "k").unwrap(), vec![1, 2, 3]);
        assert_eq!(s.read("p", "", "k").unwrap(), vec![4]);
        s.write("p", "s", "k", vec![9]).unwrap();
        assert_eq!(s.read("p", "s", "k").unwrap(), vec![9]);
        assert_eq!(s.list("p", "s").unwrap(), vec!["k".to_string()]);
        s.remove("p", "s", "k", false).unwrap();
        s.remove("p", "s", "never-written", true).unwrap();
        assert_eq!(s.read("p", "s", "k").unwrap_err().kind(), io::ErrorKind::NotFound);
        assert!(s.list("p", "s").unwrap().is_empty());
        // LDK's rules for names.
        assert!(s.write("", "s", "k", vec![]).is_err());
        assert!(s.write("p", "s", "", vec![]).is_err());
        assert!(s.write("p", "s", "bad key", vec![]).is_err());
        assert!(s.write("p", "s", &"k".repeat(121), vec![]).is_err());
        assert!(s.read("p", "s", "bad/key").is_err());
    }

    #[test]
    fn concurrent_writers_all_land_and_each_sees_its_write_on_return() {
        let dir = tmp();
        let store = Arc::new(GroupSqliteStore::open(dir.path()).unwrap());
        let threads: Vec<_> = (0..16)
            .map(|t| {
                let store = Arc::clone(&store);
                std::thread::spawn(move || {
                    for n in 0..25u8 {
                        let key = format!("k{t}_{n}");
                        KVStoreSync::write(&*store, "ns", "", &key, vec![n; 100]).unwrap();
                        assert_eq!(
                            KVStoreSync::read(&*store, "ns", "", &key).unwrap(),
                            vec![n; 100]
                        );
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(KVStoreSync::list(&*store, "ns", "").unwrap().len(), 16 * 25);
    }

    #[tokio::test]
    async fn async_writes_keep_the_order_of_their_calls_whenever_polled() {
        let dir = tmp();
        let store = GroupSqliteStore::open(dir.path()).unwrap();
        // Called in this order; polled in the reverse one.
        let first = KVStore::write(&store, "ns", "", "k", vec![1]);
        let removal = KVStore::remove(&store, "ns", "", "k", true);
        let last = KVStore::write(&store, "ns", "", "k", vec![3]);
        last.await.unwrap();
        removal.await.unwrap();
        first.await.unwrap();
        assert_eq!(KVStore::read(&store, "ns", "", "k").await.unwrap(), vec![3]);
        // A future dropped unpolled still writes, in its place.
        drop(KVStore::write(&store, "ns", "", "k", vec![4]));
        KVStore::write(&store, "ns", "", "other", vec![5]).await.unwrap();
        assert_eq!(KVStore::read(&store, "ns", "", "k").await.unwrap(), vec![4]);
        assert_eq!(KVStore::list(&store, "ns", "").await.unwrap().len(), 2);
    }

    #[test]
    fn the_file_stays_ldk_nodes_both_ways() {
        let dir = tmp();
        {
            let stock = SqliteStore::new(
                dir.path().to_path_buf(),
                Some(SQLITE_DB_FILE_NAME.to_string()),
                Some(KV_TABLE_NAME.to_string()),
            )
            .unwrap();
            KVStoreSync::write(&stock, "manager", "", "m", vec![7; 10]).unwrap();
        }
        {
            let ours = GroupSqliteStore::open(dir.path()).unwrap();
            assert_eq!(KVStoreSync::read(&ours, "manager", "", "m").unwrap(), vec![7; 10]);
            KVStoreSync::write(&ours, "monitors", "", "c", vec![8; 10]).unwrap();
        }
        let stock = SqliteStore::new(
            dir.path().to_path_buf(),
            Some(SQLITE_DB_FILE_NAME.to_string()),
            Some(KV_TABLE_NAME.to_string()),
        )
        .unwrap();
        assert_eq!(KVStoreSync::read(&stock, "monitors", "", "c").unwrap(), vec![8; 10]);
        assert_eq!(KVStoreSync::read(&stock, "manager", "", "m").unwrap(), vec![7; 10]);
    }

    #[tokio::test]
    async fn deferred_payment_writes_return_queued_and_are_durable_when_awaited() {
        let dir = tmp();
        let store = Arc::new(GroupSqliteStore::open(dir.path()).unwrap());
        let s = Arc::clone(&store);
        let (written, deferred) = defer_commits(move || {
            for n in 0..20u8 {
                KVStoreSync::write(&*s, PAYMENTS, "", &format!("p{n}"), vec![n]).unwrap();
            }
            // Not a payment record: waits for its commit as always.
            KVStoreSync::write(&*s, "monitors", "", "m", vec![7]).unwrap();
            KVStoreSync::remove(&*s, PAYMENTS, "", "p0", false).unwrap();
            // A read inside the scope sees the scope's own writes.
            KVStoreSync::read(&*s, PAYMENTS, "", "p19").unwrap()
        });
        assert_eq!(written, vec![19]);
        assert_eq!(deferred.len(), 21, "the 20 payment writes and the payment removal");
        // Another thread reads before the caller awaits: it sees every write that returned.
        let s = Arc::clone(&store);
        let listed = std::thread::spawn(move || KVStoreSync::list(&*s, PAYMENTS, "").unwrap())
            .join()
            .unwrap();
        assert_eq!(listed.len(), 19);
        deferred.durable().await.unwrap();
        assert_eq!(store.unconfirmed.load(Ordering::SeqCst), 0);
        // Outside a scope nothing is deferred, whatever the namespace.
        let ((), none) = defer_commits(|| ());
        assert!(none.is_empty());
        assert!(DEFERRED.with(|d| d.borrow().is_none()));
        KVStoreSync::write(&*store, PAYMENTS, "", "later", vec![1]).unwrap();
        assert_eq!(store.unconfirmed.load(Ordering::SeqCst), 0);
        drop(store);
        let store = GroupSqliteStore::open(dir.path()).unwrap();
        assert_eq!(KVStoreSync::list(&store, PAYMENTS, "").unwrap().len(), 20);
        assert_eq!(KVStoreSync::read(&store, "monitors", "", "m").unwrap(), vec![7]);
    }

    #[tokio::test]
    async fn a_deferred_write_that_fails_fails_the_wait_and_a_panic_ends_the_scope() {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let (ok_tx, ok_rx) = tokio::sync::oneshot::channel();
        ok_tx.send(Ok(())).unwrap();
        tx.send(Err(other("disk full"))).unwrap();
        let failed = Deferred(vec![ok_rx, rx]).durable().await.unwrap_err();
        assert!(failed.to_string().contains("disk full"));
        // The writer gone before answering.
        let (gone, rx) = tokio::sync::oneshot::channel::<io::Result<()>>();
        drop(gone);
        assert!(Deferred(vec![rx]).durable().await.is_err());
        // A panic inside the scope leaves the thread without one (a pool thread is reused).
        let caught = std::panic::catch_unwind(|| defer_commits(|| panic!("inside")));
        assert!(caught.is_err());
        assert!(DEFERRED.with(|d| d.borrow().is_none()));
        // Nested scopes: the inner one's writes are its own; the outer one is back after it.
        let dir = tmp();
        let store = GroupSqliteStore::open(dir.path()).unwrap();
        let (inner, outer) = defer_commits(|| {
            KVStoreSync::write(&store, PAYMENTS, "", "a", vec![1]).unwrap();
            let ((), inner) = defer_commits(|| {
                KVStoreSync::write(&store, PAYMENTS, "", "b", vec![2]).unwrap();
            });
            KVStoreSync::write(&store, PAYMENTS, "", "c", vec![3]).unwrap();
            inner
        });
        assert_eq!((inner.len(), outer.len()), (1, 2));
        inner.durable().await.unwrap();
        outer.durable().await.unwrap();
    }

    #[test]
    fn writes_survive_a_reopen_and_a_failed_statement_fails_only_its_caller() {
        let dir = tmp();
        {
            let store = GroupSqliteStore::open(dir.path()).unwrap();
            KVStoreSync::write(&store, "ns", "", "a", vec![1]).unwrap();
            // A batch with a statement that fails (the table's CHECK on an empty key, which
            // `check` would refuse earlier): the others of the batch commit.
            let (tx_ok, rx_ok) = mpsc::channel();
            let (tx_bad, rx_bad) = mpsc::channel();
            let batch = vec![
                Queued {
                    change: Change::Write {
                        primary: "ns".into(),
                        secondary: "".into(),
                        key: "".into(),
                        value: vec![0],
                    },
                    reply: Reply::Blocking(tx_bad),
                    deferred: false,
                },
                Queued {
                    change: Change::Write {
                        primary: "ns".into(),
                        secondary: "".into(),
                        key: "b".into(),
                        value: vec![2],
                    },
                    reply: Reply::Blocking(tx_ok),
                    deferred: false,
                },
            ];
            let mut db = connect(&dir.path().join(SQLITE_DB_FILE_NAME)).unwrap();
            commit(&mut db, batch, &AtomicUsize::new(0));
            assert!(rx_bad.recv().unwrap().is_err());
            rx_ok.recv().unwrap().unwrap();
        }
        let store = GroupSqliteStore::open(dir.path()).unwrap();
        assert_eq!(KVStoreSync::read(&store, "ns", "", "a").unwrap(), vec![1]);
        assert_eq!(KVStoreSync::read(&store, "ns", "", "b").unwrap(), vec![2]);
        assert_eq!(
            KVStoreSync::list(&store, "ns", "").unwrap(),
            vec!["a".to_string(), "b".to_string()]
        );
    }
}
