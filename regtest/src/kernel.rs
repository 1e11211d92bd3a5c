//! Thin wrapper over `bitcoinkernel`: context, chainstate manager, block submission with the
//! reject reason taken from the validation callback and the kernel's log.

use std::collections::VecDeque;
use std::path::Path;
use std::sync::{Arc, Mutex, Once};

use bitcoin::consensus::{deserialize, serialize};
use bitcoin::hashes::Hash;
use bitcoin::BlockHash;
use bitcoinkernel as bk;
use bitcoinkernel::prelude::*;

use crate::error::{Error, Result};

/// Bounded buffer of the kernel's log lines (the kernel has one process-wide logger).
static KERNEL_LOG: Mutex<LogBuffer> = Mutex::new(LogBuffer { lines: VecDeque::new(), seq: 0 });
/// Serializes block submission across every chain in the process so that the log lines read
/// after `process_block` belong to that call.
static PROCESS_LOCK: Mutex<()> = Mutex::new(());
static LOGGER_INIT: Once = Once::new();
const LOG_CAPACITY: usize = 2000;

struct LogBuffer {
    lines: VecDeque<String>,
    seq: u64,
}

struct KernelLog;

impl bk::Log for KernelLog {
    fn log(&self, message: &str) {
        let line = message.trim_end().to_string();
        tracing::trace!(target: "bitcoinkernel", "{line}");
        if let Ok(mut buf) = KERNEL_LOG.lock() {
            if buf.lines.len() >= LOG_CAPACITY {
                buf.lines.pop_front();
            }
            buf.lines.push_back(line);
            buf.seq += 1;
        }
    }
}

fn init_logger() {
    LOGGER_INIT.call_once(|| match bk::Logger::new(KernelLog) {
        // The connection must live for the whole process: the kernel logs from any thread.
        Ok(logger) => std::mem::forget(logger),
        Err(e) => tracing::warn!("cannot connect to the kernel log: {e}"),
    });
}

fn log_seq() -> u64 {
    KERNEL_LOG.lock().map(|b| b.seq).unwrap_or(0)
}

fn log_since(seq: u64) -> Vec<String> {
    match KERNEL_LOG.lock() {
        Ok(buf) => {
            let new = buf.seq.saturating_sub(seq) as usize;
            let skip = buf.lines.len().saturating_sub(new);
            buf.lines.iter().skip(skip).cloned().collect()
        }
        Err(_) => Vec::new(),
    }
}

/// Result of the block-checked validation callback.
#[derive(Debug, Clone)]
struct Checked {
    hash: [u8; 32],
    valid: bool,
    result: String,
}

/// Outcome of submitting a block.
#[derive(Debug, Clone)]
pub(crate) struct Rejection {
    /// Core-style reject reason.
    pub reason: String,
    /// Kernel log lines emitted while processing the block.
    pub log: Vec<String>,
}

/// The kernel's context and chainstate manager for one chain.
pub(crate) struct Kernel {
    // Field order matters: the chainstate manager must drop before the context.
    chainman: bk::ChainstateManager,
    _context: Arc<bk::Context>,
    checked: Arc<Mutex<Vec<Checked>>>,
}

impl Kernel {
    /// Opens (or creates) a regtest chainstate under `datadir`.
    pub fn open(datadir: &Path) -> Result<Self> {
        init_logger();
        let checked: Arc<Mutex<Vec<Checked>>> = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&checked);
        let context = bk::ContextBuilder::new()
            .chain_type(bk::ChainType::Regtest)
            .with_block_checked_validation(
                move |block: bk::Block, state: bk::BlockValidationStateRef<'_>| {
                    let valid = state.mode() == bk::ValidationMode::Valid;
                    let entry = Checked {
                        hash: block.hash().to_bytes(),
                        valid,
                        result: format!("{:?}", state.result()),
                    };
                    if let Ok(mut v) = sink.lock() {
                        v.push(entry);
                    }
                },
            )
            .with_fatal_error_notification(|message| {
                tracing::error!("bitcoinkernel fatal error: {message}");
            })
            .with_flush_error_notification(|message| {
                tracing::error!("bitcoinkernel flush error: {message}");
            })
            .build()
            .map_err(|e| Error::Kernel(format!("creating context: {e}")))?;
        let context = Arc::new(context);
        let data_dir = datadir.join("kernel");
        let blocks_dir = data_dir.join("blocks");
        std::fs::create_dir_all(&blocks_dir)
            .map_err(|e| Error::io(format!("creating {}", blocks_dir.display()), e))?;
        let data_str = data_dir
            .to_str()
            .ok_or_else(|| Error::InvalidRequest("data directory is not utf-8".into()))?;
        let blocks_str = blocks_dir
            .to_str()
            .ok_or_else(|| Error::InvalidRequest("data directory is not utf-8".into()))?;
        let chainman = bk::ChainstateManagerBuilder::new(&context, data_str, blocks_str)
            .map_err(|e| Error::Kernel(format!("chainstate options: {e}")))?
            .worker_threads(0)
            .build()
            .map_err(|e| Error::Kernel(format!("opening chainstate: {e}")))?;
        Ok(Self { chainman, _context: context, checked })
    }

    /// Height and hash of the active tip.
    pub fn tip(&self) -> (u32, BlockHash) {
        let chain = self.chainman.active_chain();
        let tip = chain.tip();
        let height = u32::try_from(tip.height()).unwrap_or(0);
        (height, to_hash(tip.block_hash().to_bytes()))
    }

    /// Hash of the active-chain block at `height`.
    pub fn hash_at(&self, height: u32) -> Option<BlockHash> {
        let chain = self.chainman.active_chain();
        chain.at_height(height as usize).map(|e| to_hash(e.block_hash().to_bytes()))
    }

    /// Reads a block of the active chain at `height` from the kernel's block files.
    pub fn read_block_at(&self, height: u32) -> Result<bitcoin::Block> {
        let chain = self.chainman.active_chain();
        let entry = chain
            .at_height(height as usize)
            .ok_or_else(|| Error::Kernel(format!("no block at height {height}")))?;
        let block = self
            .chainman
            .read_block_data(&entry)
            .map_err(|e| Error::Kernel(format!("reading block {height}: {e}")))?;
        let raw = block
            .consensus_encode()
            .map_err(|e| Error::Kernel(format!("encoding block {height}: {e}")))?;
        deserialize(&raw).map_err(|e| Error::Kernel(format!("decoding block {height}: {e}")))
    }

    /// Number of spent outputs recorded in the undo data of the active block at `height`
    /// (a consistency check against the chain's own UTXO bookkeeping).
    pub fn spent_output_count(&self, height: u32) -> Result<usize> {
        let chain = self.chainman.active_chain();
        let entry = chain
            .at_height(height as usize)
            .ok_or_else(|| Error::Kernel(format!("no block at height {height}")))?;
        let spent = self
            .chainman
            .read_spent_outputs(&entry)
            .map_err(|e| Error::Kernel(format!("reading undo data {height}: {e}")))?;
        Ok(spent.iter().map(|t| t.count()).sum())
    }

    /// Hands a block to `ChainstateManager::process_block`. `Ok` means the kernel stored the
    /// block and did not find it invalid (it may sit on a side branch); `Err` carries Core's
    /// reject reason.
    pub fn submit(&self, block: &bitcoin::Block) -> Result<Result<(), Rejection>> {
        let raw = serialize(block);
        let kblock =
            bk::Block::new(&raw).map_err(|e| Error::Kernel(format!("block decode: {e}")))?;
        let hash = block.block_hash().to_byte_array();
        let _guard = PROCESS_LOCK.lock().map_err(|_| Error::Kernel("lock".into()))?;
        if let Ok(mut v) = self.checked.lock() {
            v.clear();
        }
        let seq = log_seq();
        let result = self.chainman.process_block(&kblock);
        let log = log_since(seq);
        let checked: Vec<Checked> = self.checked.lock().map(|v| v.clone()).unwrap_or_default();
        let invalid = checked.iter().find(|c| c.hash == hash && !c.valid);
        let in_index = self.chainman.get_block_tree_entry(&kblock.hash()).is_some();
        if result.is_rejected() || invalid.is_some() || !in_index {
            let reason = reject_reason(&log)
                .or_else(|| invalid.map(|c| format!("block invalid ({})", c.result)))
                .unwrap_or_else(|| "block rejected".to_string());
            return Ok(Err(Rejection { reason, log }));
        }
        Ok(Ok(()))
    }
}

fn to_hash(bytes: [u8; 32]) -> BlockHash {
    BlockHash::from_byte_array(bytes)
}

/// Extracts Core's reject reason from the log lines of one `process_block` call.
fn reject_reason(log: &[String]) -> Option<String> {
    for line in log {
        if let Some(i) = line.find("AcceptBlock FAILED (") {
            let rest = &line[i + "AcceptBlock FAILED (".len()..];
            let end = rest.rfind(')').unwrap_or(rest.len());
            return Some(rest[..end].to_string());
        }
    }
    for line in log {
        if line.contains("ConnectBlock") {
            if let Some(i) = line.find("failed, ") {
                return Some(line[i + "failed, ".len()..].trim().to_string());
            }
        }
    }
    for line in log {
        if let Some(i) = line.find("failed with ") {
            return Some(line[i + "failed with ".len()..].trim().to_string());
        }
    }
    log.iter().find(|l| l.contains("ERROR") || l.contains("invalid")).map(|l| l.trim().to_string())
}
