//! Looper conformance.
