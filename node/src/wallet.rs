//! wallet (in progress).
