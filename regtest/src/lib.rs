//! Looper regtest.
