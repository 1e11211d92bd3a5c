//! The JSON-RPC error both RPC servers answer with (the Electrum server and the Bitcoin Core
//! JSON-RPC emulation); each defines its own codes and envelope.

use serde_json::{json, Value};

/// A JSON-RPC error: its code (the protocol's own numbering) and message.
#[derive(Debug)]
pub(crate) struct RpcError {
    pub(crate) code: i64,
    pub(crate) message: String,
}

impl RpcError {
    pub(crate) fn new(code: i64, message: impl Into<String>) -> Self {
        RpcError { code, message: message.into() }
    }

    /// The `error` member of a JSON-RPC answer.
    pub(crate) fn to_json(&self) -> Value {
        json!({ "code": self.code, "message": self.message })
    }
}

pub(crate) type RpcResult<T> = Result<T, RpcError>;
