//! Error types of the regtest chain.

use bitcoin::Txid;

/// Errors returned by the regtest chain.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The kernel (libbitcoinkernel) failed in a way unrelated to validation.
    #[error("kernel error: {0}")]
    Kernel(String),
    /// A transaction was rejected; `reason` is Bitcoin Core's reject reason.
    #[error("transaction {txid} rejected: {reason}")]
    TxRejected {
        /// The rejected transaction's id.
        txid: Txid,
        /// Core-style reject reason (for example `non-final`).
        reason: String,
    },
    /// The kernel rejected a block built by the chain.
    #[error("block rejected: {0}")]
    BlockRejected(String),
    /// A request was invalid (bad parameters).
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// The chain's funds (matured coinbases) do not cover a funding request.
    #[error("insufficient funds: need {needed} sat, have {available} sat")]
    InsufficientFunds {
        /// Satoshis needed, fees included.
        needed: u64,
        /// Satoshis spendable by the chain's miner key.
        available: u64,
    },
    /// An I/O error (data directory, listening socket, server thread).
    #[error("i/o error: {context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The chain has been shut down.
    #[error("chain is shut down")]
    ShutDown,
}

impl Error {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io { context: context.into(), source }
    }
}

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
