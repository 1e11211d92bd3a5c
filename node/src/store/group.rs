//! Group commit for [`super::RedbStore`]: the writes of concurrent callers go into one redb
//! transaction and one durable commit.
//!
//! Every write is a closure queued, with a channel for its outcome, to the store's writer thread.
//! The writer takes everything queued, runs it in one write transaction, commits, and tells each
//! caller its outcome; writes queued while it commits go into its next transaction. A lone write
//! is committed at once (one transaction, as without grouping). Nobody returns before the commit
//! that holds its write is durable (persist before act holds), and the writes of one caller are
//! committed in the order it made them.
//!
//! A write that fails rolls back the whole transaction; it is reported failed and the others are
//! run again in a new transaction (the closures run again from the start, so they are `FnMut`
//! and keep nothing from a failed run).
//!
//! Why: redb takes one write transaction at a time, and many concurrent writers (the message
//! handlers answering a burst of swap requests) spent most of their time waiting on each other's
//! commits. Why a thread of its own: when the callers took turns as the committing leader, each
//! had to take the leader's lock to learn that another had committed its write, so a burst of
//! writers woke one after the other behind that lock (hundreds of milliseconds on two busy
//! cores for commits of about one); now each caller wakes once, when its outcome is sent
//! (`docs/benchmarks.md`, "Swap store" and "One seller, 500 concurrent swaps").

use std::sync::mpsc;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;

use redb::{Database, WriteTransaction};

use super::StoreError;

/// A queued write: runs in the transaction, keeps its value for its caller.
type Job = Box<dyn FnMut(&WriteTransaction) -> Result<(), StoreError> + Send>;

struct Queued {
    job: Job,
    done: mpsc::Sender<Result<(), StoreError>>,
}

/// The writer thread and the queue to it. Dropping it lets the thread finish what is queued and
/// waits for it (the database is closed when the last handle to it goes).
pub(super) struct GroupCommit {
    queue: Option<mpsc::Sender<Queued>>,
    writer: Option<JoinHandle<()>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn stopped() -> StoreError {
    StoreError::Database {
        op: "group commit",
        source: Box::new(redb::Error::Io(std::io::Error::other("the store's writer stopped"))),
    }
}

impl GroupCommit {
    /// Starts the writer thread of `db`.
    ///
    /// # Errors
    /// [`StoreError::Database`] when the thread cannot be started.
    pub(super) fn start(db: Arc<Database>) -> Result<GroupCommit, StoreError> {
        let (queue, jobs) = mpsc::channel::<Queued>();
        let writer = std::thread::Builder::new()
            .name("looper-store-writer".into())
            .spawn(move || {
                while let Ok(first) = jobs.recv() {
                    let mut batch = vec![first];
                    batch.extend(jobs.try_iter());
                    commit(&db, batch);
                }
            })
            .map_err(|e| StoreError::Database {
                op: "start the store's writer",
                source: Box::new(redb::Error::Io(e)),
            })?;
        Ok(GroupCommit { queue: Some(queue), writer: Some(writer) })
    }

    /// Runs `op` in a write transaction committed durably, with whatever other writes are queued.
    /// Blocks the calling thread until then.
    pub(super) fn write<R: Send + 'static>(
        &self,
        mut op: impl FnMut(&WriteTransaction) -> Result<R, StoreError> + Send + 'static,
    ) -> Result<R, StoreError> {
        let value: Arc<Mutex<Option<R>>> = Arc::new(Mutex::new(None));
        let slot = Arc::clone(&value);
        let job: Job = Box::new(move |tx| {
            let v = op(tx)?;
            *lock(&slot) = Some(v);
            Ok(())
        });
        let (done, outcome) = mpsc::channel();
        let queue = self.queue.as_ref().ok_or_else(stopped)?;
        queue.send(Queued { job, done }).map_err(|_| stopped())?;
        outcome.recv().map_err(|_| stopped())??;
        let taken = lock(&value).take();
        taken.ok_or_else(|| StoreError::Database {
            op: "group commit",
            source: Box::new(redb::Error::Io(std::io::Error::other("a write left no value"))),
        })
    }
}

impl Drop for GroupCommit {
    fn drop(&mut self) {
        // The writer ends once the queue is closed and empty.
        drop(self.queue.take());
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
}

/// Runs `batch` in one transaction and commits it; a failing write is taken out and the rest
/// run again.
fn commit(db: &Database, mut batch: Vec<Queued>) {
    while !batch.is_empty() {
        let tx = match db.begin_write() {
            Ok(tx) => tx,
            Err(e) => return fail_all(batch, "begin a write", e.into()),
        };
        let mut failed = None;
        for (i, q) in batch.iter_mut().enumerate() {
            if let Err(e) = (q.job)(&tx) {
                failed = Some((i, e));
                break;
            }
        }
        match failed {
            Some((i, e)) => {
                // Nothing of this transaction is kept; the others run again.
                drop(tx.abort());
                let q = batch.remove(i);
                let _ = q.done.send(Err(e));
            }
            None => {
                match tx.commit() {
                    Ok(()) => {
                        for q in batch {
                            let _ = q.done.send(Ok(()));
                        }
                    }
                    Err(e) => fail_all(batch, "commit", e.into()),
                }
                return;
            }
        }
    }
}

/// Each write of `batch` fails with `e` (the first with `e` itself, the others with its text).
fn fail_all(batch: Vec<Queued>, op: &'static str, e: redb::Error) {
    let message = e.to_string();
    let mut first = Some(e);
    for q in batch {
        let source = match first.take() {
            Some(e) => Box::new(e),
            None => Box::new(redb::Error::Io(std::io::Error::other(message.clone()))),
        };
        let _ = q.done.send(Err(StoreError::Database { op, source }));
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use redb::backends::InMemoryBackend;
    use redb::{ReadableTable, TableDefinition};

    use super::*;

    const T: TableDefinition<u64, u64> = TableDefinition::new("t");

    fn db() -> Arc<Database> {
        Arc::new(Database::builder().create_with_backend(InMemoryBackend::new()).unwrap())
    }

    fn read(db: &Database, k: u64) -> Option<u64> {
        let tx = db.begin_read().unwrap();
        let t = tx.open_table(T).unwrap();
        t.get(k).unwrap().map(|v| v.value())
    }

    #[test]
    fn concurrent_writers_each_get_their_value_and_every_write_lands() {
        let db = db();
        let group = Arc::new(GroupCommit::start(Arc::clone(&db)).unwrap());
        let threads: Vec<_> = (0..16u64)
            .map(|t| {
                let (db, group) = (Arc::clone(&db), Arc::clone(&group));
                std::thread::spawn(move || {
                    for n in 0..25u64 {
                        let k = t * 1000 + n;
                        let got = group
                            .write(move |tx| {
                                tx.open_table(T).unwrap().insert(k, k * 2).unwrap();
                                Ok(k + 1)
                            })
                            .unwrap();
                        assert_eq!(got, k + 1);
                        // Durable (visible to a new reader) once the call returns.
                        assert_eq!(read(&db, k), Some(k * 2));
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let tx = db.begin_read().unwrap();
        assert_eq!(tx.open_table(T).unwrap().iter().unwrap().count(), 16 * 25);
    }

    #[test]
    fn a_failing_write_is_reported_and_the_others_of_its_group_still_commit() {
        let db = db();
        let mut batch = Vec::new();
        let mut outcomes = Vec::new();
        for k in 0..3u64 {
            let (done, outcome) = mpsc::channel();
            let job: Job = Box::new(move |tx| {
                tx.open_table(T).unwrap().insert(k, 7).unwrap();
                if k == 1 {
                    return Err(StoreError::IndexExhausted);
                }
                Ok(())
            });
            batch.push(Queued { job, done });
            outcomes.push(outcome);
        }
        commit(&db, batch);
        let results: Vec<bool> = outcomes.iter().map(|o| o.recv().unwrap().is_ok()).collect();
        assert_eq!(results, vec![true, false, true]);
        assert_eq!(read(&db, 0), Some(7));
        assert_eq!(read(&db, 1), None, "the failed write's changes are rolled back");
        assert_eq!(read(&db, 2), Some(7));
    }
}
