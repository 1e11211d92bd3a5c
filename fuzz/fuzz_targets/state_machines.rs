//! A buyer and a seller state machine fed an arbitrary sequence of events chosen by the fuzz
//! bytes (messages delivered, dropped, duplicated, replayed, altered or forged by the peer; blocks,
//! reorgs, time; Lightning payments arriving, failing or never sent; crashes after a persist,
//! restarts; user aborts), with the invariants of `docs/fuzzing.md` checked after every step and
//! the outcome checked after the swap is let finish. The driver is `looper_fuzz::pair`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    looper_fuzz::pair::Pair::run_bytes(data);
});
