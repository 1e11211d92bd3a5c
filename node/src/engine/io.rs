//! The engine's I/O, as traits: everything the engine touches outside its own memory goes
//! through one of these, so that the deterministic test bed (`tests/`) can run the real engine
//! over simulated parts (LDK's `ChannelManager` over traits; quinn-proto's time passed in).
//!
//! | trait | production | what for |
//! |---|---|---|
//! | [`ChainSource`](crate::chain::ChainSource) | Esplora, Electrum or bitcoind RPC | tip, HTLC histories, broadcast, fees |
//! | [`Lightning`](crate::lightning::Lightning) | ldk-node | invoices, payments, their events |
//! | [`SwapWallet`] | BDK ([`BdkSwapWallet`]) | addresses, funding transactions |
//! | [`SwapTransport`] | Nostr ([`NostrTransport`]) | swap messages, offers |
//! | [`SwapStore`](crate::store::SwapStore) | redb | swap records, offers, event logs |
//! | [`Clock`] | [`SystemClock`] | the swaps' `now` |
//! | [`Entropy`] | [`OsEntropy`] | swap ids, MuSig2 nonces |

use std::sync::atomic::Ordering;
use std::sync::Arc;

use async_trait::async_trait;
use bitcoin::{Amount, FeeRate, ScriptBuf, Transaction};
use looper_protocol::messages::{Envelope, Offer};
use rand::{CryptoRng, RngCore};

use crate::nostr::{
    EventId, Incoming, Keys, NostrTransport, PublicKey, SendOptions, TransportError,
};
use crate::wallet::{CpfpTx, FundingTx, LooperWallet, WalletError};

/// The node's on-chain wallet as the engine uses it: it pays HTLCs (seller) and receives claims
/// and refunds.
#[async_trait]
pub trait SwapWallet: Send + Sync {
    /// A new script of the wallet to receive a claim or a refund (revealed and persisted, so it
    /// is watched from now on).
    fn new_script(&self) -> Result<ScriptBuf, WalletError>;
    /// What the wallet can spend now (confirmed and trusted pending), in sat: the seller's
    /// check before taking a swap, which need not wait for a funding the wallet is busy with
    /// (the balance may then lag by that funding).
    fn spendable_sat(&self) -> Result<u64, WalletError>;
    /// Brings the wallet up to date with the chain.
    async fn sync(&self) -> Result<(), WalletError>;
    /// Builds and signs one transaction paying every `(script, amount)` of `outputs` at
    /// `fee_rate`, and records it as unconfirmed at once, so that no other spend picks its coins
    /// (no lock is held while it is broadcast). A transaction that is then never broadcast must
    /// be given to [`SwapWallet::forget`].
    async fn fund(
        &self,
        outputs: &[(ScriptBuf, Amount)],
        fee_rate: FeeRate,
    ) -> Result<FundingTx, WalletError>;
    /// A transaction the wallet built and recorded (in the chain or not) with an output paying
    /// `amount` to `script`, and its index: a funding built before a crash, which a swap must
    /// take instead of funding its HTLC a second time.
    fn find_funding(
        &self,
        script: &ScriptBuf,
        amount: Amount,
    ) -> Result<Option<(Transaction, u32)>, WalletError>;
    /// Forgets a transaction from [`SwapWallet::fund`] that will not be broadcast: its coins are
    /// spendable again.
    fn forget(&self, tx: &Transaction) -> Result<(), WalletError>;
    /// Records a broadcast transaction that pays the wallet (a claim, a refund) as unconfirmed.
    fn apply_unconfirmed(&self, tx: &Transaction) -> Result<(), WalletError>;
    /// The wallet's fee-rate cap: no transaction it funds, and no claim or refund the engine
    /// builds before the deadline's urgent window, pays more.
    fn max_fee_rate(&self) -> FeeRate;
    /// A child of `parent` (an unconfirmed funding of this wallet) spending its change back to
    /// the wallet, paying what lifts the pair to `package_rate`; it replaces `replaces` (or an
    /// earlier child the wallet knows). Recorded as unconfirmed before it is returned; give it
    /// to [`SwapWallet::forget`] if it is not broadcast. `Ok(None)`: nothing to do or not
    /// possible. Without an override (a wallet that cannot): `Ok(None)`.
    async fn cpfp(
        &self,
        _parent: &Transaction,
        _replaces: Option<&Transaction>,
        _package_rate: FeeRate,
    ) -> Result<Option<CpfpTx>, WalletError> {
        Ok(None)
    }
}

/// How many receive scripts [`BdkSwapWallet`] reveals at once for the swaps' claims and refunds
/// (one wallet write for all of them instead of one per swap). With the [`SCRIPT_REFILL_AT`]
/// scripts left when the next batch is revealed, below the wallet's
/// [`crate::wallet::STOP_GAP`]: the scripts a restart leaves unused never hide a later payment
/// from a full scan.
pub const SCRIPT_BATCH: usize = 24;

/// [`BdkSwapWallet`] reveals the next [`SCRIPT_BATCH`] in the background once this many revealed
/// scripts are left, so that a burst of swap requests finds them revealed and persisted (one
/// durable wallet write per batch, not on the requests' path).
pub const SCRIPT_REFILL_AT: usize = crate::wallet::STOP_GAP - SCRIPT_BATCH - 1;

const _: () = assert!(SCRIPT_REFILL_AT + SCRIPT_BATCH < crate::wallet::STOP_GAP);

/// Longest wait of [`BdkSwapWallet::new_script`] for a background refill before it looks again.
const REFILL_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// The BDK wallet with the chain source's client that syncs it (`None`: the engine does not
/// sync it).
pub struct BdkSwapWallet {
    wallet: Arc<LooperWallet>,
    sync: Option<crate::wallet::WalletSync>,
    /// Scripts revealed and persisted ahead ([`SCRIPT_BATCH`] at a time), not handed out yet,
    /// and the signal of a background refill's end.
    spare: Arc<(std::sync::Mutex<std::collections::VecDeque<ScriptBuf>>, std::sync::Condvar)>,
    /// A background refill of `spare` is under way.
    refilling: Arc<std::sync::atomic::AtomicBool>,
}

impl BdkSwapWallet {
    /// The engine's view of `wallet`, synced through `sync` when given (an Esplora client or
    /// the Electrum one, [`crate::wallet::WalletSync`]).
    pub fn new(
        wallet: Arc<LooperWallet>,
        sync: Option<impl Into<crate::wallet::WalletSync>>,
    ) -> Self {
        BdkSwapWallet {
            wallet,
            sync: sync.map(Into::into),
            spare: Default::default(),
            refilling: Default::default(),
        }
    }
}

impl BdkSwapWallet {
    /// Reveals the next [`SCRIPT_BATCH`] scripts on tokio's blocking pool (no runtime: nothing;
    /// the next caller that finds none reveals them), unless a refill is under way.
    fn refill_in_background(&self) {
        if self.refilling.swap(true, Ordering::SeqCst) {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            self.refilling.store(false, Ordering::SeqCst);
            return;
        };
        let (wallet, spare, refilling) =
            (Arc::clone(&self.wallet), Arc::clone(&self.spare), Arc::clone(&self.refilling));
        runtime.spawn_blocking(move || {
            // Ends the refill however this returns (a panic in the wallet included), so that no
            // caller waits for one that is gone.
            let _end = RefillEnd { spare: Arc::clone(&spare), refilling };
            let revealed = wallet.new_addresses(SCRIPT_BATCH);
            let mut scripts = spare.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            match revealed {
                Ok(revealed) => scripts.extend(revealed.into_iter().map(|a| a.script_pubkey())),
                Err(e) => tracing::debug!(error = %e, "cannot reveal the next wallet scripts"),
            }
        });
    }
}

/// Marks a background refill ended, under the spare scripts' lock (a caller that saw it under
/// way is waiting, or will be), and wakes the callers waiting for it.
struct RefillEnd {
    spare: Arc<(std::sync::Mutex<std::collections::VecDeque<ScriptBuf>>, std::sync::Condvar)>,
    refilling: Arc<std::sync::atomic::AtomicBool>,
}

impl Drop for RefillEnd {
    fn drop(&mut self) {
        let (spare, refilled) = &*self.spare;
        let guard = spare.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        self.refilling.store(false, Ordering::SeqCst);
        drop(guard);
        refilled.notify_all();
    }
}

impl std::fmt::Debug for BdkSwapWallet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BdkSwapWallet").field("syncs", &self.sync.is_some()).finish()
    }
}

#[async_trait]
impl SwapWallet for BdkSwapWallet {
    fn new_script(&self) -> Result<ScriptBuf, WalletError> {
        let (spare, refilled) = &*self.spare;
        let mut spare = spare.lock().map_err(|_| WalletError::Poisoned)?;
        loop {
            if let Some(script) = spare.pop_front() {
                if spare.len() <= SCRIPT_REFILL_AT {
                    self.refill_in_background();
                }
                return Ok(script);
            }
            if !self.refilling.load(Ordering::SeqCst) {
                break;
            }
            // The background refill is under way: wait for it (revealing more here would leave
            // more scripts unused than the gap allows).
            spare = refilled.wait_timeout(spare, REFILL_WAIT).map_err(|_| WalletError::Poisoned)?.0;
        }
        // No refill under way (none started, or it failed): reveal the batch here, under the
        // lock, so that concurrent callers wait for it rather than reveal more.
        let mut revealed =
            self.wallet.new_addresses(SCRIPT_BATCH)?.into_iter().map(|a| a.script_pubkey());
        let first = match revealed.next() {
            Some(script) => script,
            None => self.wallet.new_address()?.script_pubkey(),
        };
        spare.extend(revealed);
        Ok(first)
    }

    fn spendable_sat(&self) -> Result<u64, WalletError> {
        let b = self.wallet.recent_balance()?;
        Ok((b.confirmed + b.trusted_pending).to_sat())
    }

    async fn sync(&self) -> Result<(), WalletError> {
        match &self.sync {
            Some(source) => self.wallet.sync_with(source).await,
            None => Ok(()),
        }
    }

    async fn fund(
        &self,
        outputs: &[(ScriptBuf, Amount)],
        fee_rate: FeeRate,
    ) -> Result<FundingTx, WalletError> {
        // Held while building and recording only: no network wait under it.
        let _spending = self.wallet.spend_guard().await;
        // Coin selection, signing and a durable write under the wallet's lock: not on a worker
        // of the runtime (the swap messages' handlers would stall behind it).
        super::blocking_store(|| {
            let funding = self.wallet.build_funding_tx(outputs, fee_rate)?;
            self.wallet.apply_unconfirmed(&funding.tx)?;
            Ok(funding)
        })
    }

    fn find_funding(
        &self,
        script: &ScriptBuf,
        amount: Amount,
    ) -> Result<Option<(Transaction, u32)>, WalletError> {
        self.wallet.find_payment(script, amount)
    }

    fn forget(&self, tx: &Transaction) -> Result<(), WalletError> {
        self.wallet.forget_tx(tx)
    }

    fn apply_unconfirmed(&self, tx: &Transaction) -> Result<(), WalletError> {
        self.wallet.apply_unconfirmed(tx)
    }

    fn max_fee_rate(&self) -> FeeRate {
        self.wallet.max_fee_rate()
    }

    async fn cpfp(
        &self,
        parent: &Transaction,
        replaces: Option<&Transaction>,
        package_rate: FeeRate,
    ) -> Result<Option<CpfpTx>, WalletError> {
        let _spending = self.wallet.spend_guard().await;
        self.wallet.build_cpfp(parent, replaces, package_rate)
    }
}

/// How swap messages and offers travel (Nostr gift wraps in production).
///
/// The node speaks with two kinds of keys: its identity ([`SwapTransport::public_key`]: its
/// offers, and its swaps as a seller) and, as a buyer, one key per swap derived from the seed
/// (`crate::seed::swap_nostr_secret_key`), held with [`SwapTransport::add_key`] for as long as
/// the swap may hear from its seller (spec `04-nostr.md`, "Keys").
#[async_trait]
pub trait SwapTransport: Send + Sync {
    /// This node's identity: the author of its offers and its key as a seller.
    fn public_key(&self) -> PublicKey;
    /// Receives the messages addressed to `keys` too (delivered on
    /// [`SwapTransport::incoming`] with it as [`Incoming::recipient`]) and sends as it: a buyer
    /// swap's own key. Adding a key it holds changes nothing.
    ///
    /// # Errors
    /// The relays could not be told (the key is held all the same, see
    /// [`NostrTransport::add_key`]).
    async fn add_key(&self, keys: &Keys) -> Result<(), TransportError>;
    /// Stops receiving the messages addressed to `key` and forgets it (a swap that ended).
    async fn remove_key(&self, key: &PublicKey);
    /// The stream of messages addressed to this node (once; `None` after the first call).
    fn incoming(&self) -> Option<tokio::sync::mpsc::Receiver<Incoming>>;
    /// Marks a delivered message processed: it is not delivered again, not even after a
    /// restart. Called only once what follows from it is persisted.
    fn ack(&self, event_id: &EventId) -> Result<bool, TransportError>;
    /// Sends `envelope` to `peer` as `from` (the identity or a key given to
    /// [`SwapTransport::add_key`]), through `relays` besides the node's own, when given.
    ///
    /// # Errors
    /// [`TransportError::UnknownKey`] when `from` is neither; the transport's own failures.
    async fn send(
        &self,
        from: &PublicKey,
        peer: &PublicKey,
        relays: &[String],
        envelope: &Envelope,
    ) -> Result<(), TransportError>;
    /// As [`SwapTransport::send`], with NIP-13 proof of work of `pow` bits on the gift wrap (a
    /// `swap_request` for an offer that asks for it). Without an override the work is skipped.
    ///
    /// # Errors
    /// As [`SwapTransport::send`].
    async fn send_with_pow(
        &self,
        from: &PublicKey,
        peer: &PublicKey,
        relays: &[String],
        envelope: &Envelope,
        _pow: u8,
    ) -> Result<(), TransportError> {
        self.send(from, peer, relays, envelope).await
    }
    /// Whether messages without proof of work may come to the identity: see
    /// [`NostrTransport::set_unmined_expected`]. Without an override, nothing.
    fn set_unmined_expected(&self, _expected: bool) {}
    /// Publishes (or replaces) an offer.
    async fn publish_offer(&self, offer: &Offer) -> Result<(), TransportError>;
    /// Takes an offer off the relays.
    async fn withdraw_offer(&self, offer_id: &str) -> Result<(), TransportError>;
}

#[async_trait]
impl SwapTransport for NostrTransport {
    fn public_key(&self) -> PublicKey {
        NostrTransport::public_key(self)
    }

    async fn add_key(&self, keys: &Keys) -> Result<(), TransportError> {
        NostrTransport::add_key(self, keys.clone()).await
    }

    async fn remove_key(&self, key: &PublicKey) {
        NostrTransport::remove_key(self, key).await;
    }

    fn incoming(&self) -> Option<tokio::sync::mpsc::Receiver<Incoming>> {
        NostrTransport::incoming(self)
    }

    fn ack(&self, event_id: &EventId) -> Result<bool, TransportError> {
        NostrTransport::ack(self, event_id)
    }

    async fn send(
        &self,
        from: &PublicKey,
        peer: &PublicKey,
        relays: &[String],
        envelope: &Envelope,
    ) -> Result<(), TransportError> {
        let opts = SendOptions { from: Some(*from), ..SendOptions::default() };
        NostrTransport::send_with(self, peer, relays, envelope, opts).await.map(|_| ())
    }

    async fn send_with_pow(
        &self,
        from: &PublicKey,
        peer: &PublicKey,
        relays: &[String],
        envelope: &Envelope,
        pow: u8,
    ) -> Result<(), TransportError> {
        let opts = SendOptions { pow: Some(pow), from: Some(*from), ..SendOptions::default() };
        NostrTransport::send_with(self, peer, relays, envelope, opts).await.map(|_| ())
    }

    fn set_unmined_expected(&self, expected: bool) {
        NostrTransport::set_unmined_expected(self, expected);
    }

    async fn publish_offer(&self, offer: &Offer) -> Result<(), TransportError> {
        NostrTransport::publish_offer(self, offer).await.map(|_| ())
    }

    async fn withdraw_offer(&self, offer_id: &str) -> Result<(), TransportError> {
        NostrTransport::withdraw_offer(self, offer_id).await
    }
}

/// The swaps' wall clock (seconds since the Unix epoch).
pub trait Clock: Send + Sync {
    /// Now.
    fn now_secs(&self) -> u64;

    /// Now, in milliseconds (the time of a swap's events); by default [`Clock::now_secs`] in
    /// milliseconds.
    fn now_millis(&self) -> u64 {
        self.now_secs().saturating_mul(1000)
    }
}

/// The system clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_secs(&self) -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
    }

    fn now_millis(&self) -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            .unwrap_or(0)
    }
}

/// Randomness for swap ids and MuSig2 secret nonces. The node always uses [`OsEntropy`]; a
/// seeded source is for the deterministic test bed only (nonces from it are predictable).
pub trait Entropy: Send + Sync {
    /// Fills `dest` with random bytes.
    fn fill(&self, dest: &mut [u8]);
}

/// The operating system's RNG.
#[derive(Debug, Clone, Copy, Default)]
pub struct OsEntropy;

impl Entropy for OsEntropy {
    fn fill(&self, dest: &mut [u8]) {
        rand::rngs::OsRng.fill_bytes(dest);
    }
}

/// An [`Entropy`] as an RNG for the state machines.
pub(crate) struct EntropyRng<'a>(pub(crate) &'a dyn Entropy);

impl RngCore for EntropyRng<'_> {
    fn next_u32(&mut self) -> u32 {
        let mut b = [0u8; 4];
        self.0.fill(&mut b);
        u32::from_le_bytes(b)
    }

    fn next_u64(&mut self) -> u64 {
        let mut b = [0u8; 8];
        self.0.fill(&mut b);
        u64::from_le_bytes(b)
    }

    fn fill_bytes(&mut self, dest: &mut [u8]) {
        self.0.fill(dest);
    }

    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand::Error> {
        self.0.fill(dest);
        Ok(())
    }
}

// Every `Entropy` is a cryptographic source in production (`OsEntropy`); the test bed's seeded
// one is declared so for the tests only.
impl CryptoRng for EntropyRng<'_> {}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::collections::HashSet;

    use bitcoin::Network;

    use super::*;
    use crate::seed::{Mnemonic, NodeKeys};
    use crate::store::RedbStore;

    const ABANDON: &str = "abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon about";

    /// However fast scripts are taken, every one is new, and the revealed scripts not handed out
    /// stay below the stop gap (a restart leaves them unused: a full scan must see past them).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn scripts_are_refilled_ahead_and_never_leave_a_gap() {
        let dir = tempfile::tempdir().unwrap();
        let store = RedbStore::open(&dir.path().join("looper.redb")).unwrap();
        let keys =
            NodeKeys::from_mnemonic(&Mnemonic::parse(ABANDON, "t").unwrap(), Network::Regtest)
                .unwrap();
        let cap = FeeRate::from_sat_per_vb_u32(50);
        let wallet = Arc::new(
            LooperWallet::load_or_create(store.database(), &keys, Network::Regtest, cap).unwrap(),
        );
        let swap_wallet =
            Arc::new(BdkSwapWallet::new(Arc::clone(&wallet), None::<crate::wallet::WalletSync>));
        // Takers on several threads at once, as the message handlers are.
        let takers: Vec<_> = (0..4)
            .map(|_| {
                let w = Arc::clone(&swap_wallet);
                tokio::task::spawn_blocking(move || {
                    (0..50).map(|_| w.new_script().unwrap()).collect::<Vec<_>>()
                })
            })
            .collect();
        let mut seen = HashSet::new();
        for t in takers {
            for script in t.await.unwrap() {
                assert!(seen.insert(script), "a script handed out twice");
            }
        }
        assert_eq!(seen.len(), 200);
        // Let a refill under way finish, then count what is revealed and not handed out.
        let settle = || tokio::time::sleep(std::time::Duration::from_millis(200));
        settle().await;
        let unused = wallet.revealed_receive_addresses().unwrap() as usize - seen.len();
        assert!(unused < crate::wallet::STOP_GAP, "{unused} revealed scripts left unused");
        // One more: whatever was left, a batch is revealed ahead of the next caller.
        let w = Arc::clone(&swap_wallet);
        let script = tokio::task::spawn_blocking(move || w.new_script()).await.unwrap().unwrap();
        assert!(seen.insert(script));
        settle().await;
        let unused = wallet.revealed_receive_addresses().unwrap() as usize - seen.len();
        assert!(
            (SCRIPT_BATCH..crate::wallet::STOP_GAP).contains(&unused),
            "{unused} revealed scripts ahead"
        );
    }
}
