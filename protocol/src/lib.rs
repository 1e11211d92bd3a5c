//! Looper protocol.
