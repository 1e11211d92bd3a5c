//! Both roles' state tables in one place: each state's kind and the transitions between states
//! (the diagrams in `spec/diagrams/` are generated from them, [`crate::diagrams`]). The tables are
//! data of the same shape; the state machines' code is in [`crate::buyer`] and
//! [`crate::seller`], their shared core in `shared`.

use crate::buyer::BuyerState;
use crate::seller::SellerState;
use crate::shared::swap_states;
use crate::swap::Transition;

/// The buyer's transition table (the diagrams in `spec/diagrams/` are generated from it).
pub const BUYER_TRANSITIONS: &[Transition] = &[
    ("Requested", "Accepted", "swap_accept passes every check / pay the prepay, if any"),
    ("Requested", "Aborted", "error, swap_abort, a failed check or user abort"),
    ("Accepting", "Accepted", "loop in: swap_funded with the taker's invoice passes every check"),
    (
        "Accepting",
        "Aborted",
        "loop in: a failed check, error, swap_abort, user abort, funding timeout / send swap_abort",
    ),
    ("Accepted", "Funded", "htlc on chain with agreed script and value"),
    (
        "Accepted",
        "Aborted",
        "a failed check, swap_abort, user abort, invoice expiry, prepay failed",
    ),
    ("Funded", "Paying", "min_confirmations reached and checks pass / pay"),
    ("Funded", "Aborted", "a failed check, swap_abort, user abort, timeout too close"),
    ("Funded", "Accepted", "htlc gone from the chain (reorg, double spend)"),
    ("Funded", "Paying", "a payment for the hash found in flight"),
    ("Funded", "Claiming", "a payment for the hash found succeeded"),
    ("Paying", "Claiming", "payment succeeded / send coop_claim_request"),
    ("Paying", "Funded", "payment failed or not sent, attempts left / retry in 10 s"),
    (
        "Paying",
        "Aborted",
        "payment failed or not sent, no attempts left or htlc refunded / send swap_abort",
    ),
    ("Aborted", "Claiming", "a payment for the hash found succeeded (claim anyway)"),
    ("Claiming", "ClaimBroadcast", "coop_claim_response, or 30 s / script path"),
    (
        "Claiming",
        "Lost",
        "a refund by the seller 6 blocks deep, or the htlc funding gone past the timeout",
    ),
    ("Claiming", "ClaimBroadcast", "our claim seen confirmed (broadcast before a restart)"),
    ("Paying", "Lost", "htlc refunded, then the payment succeeded (or its fate is lost: restored)"),
    ("ClaimBroadcast", "Claimed", "our claim 6 blocks deep (out again if a reorg drops it)"),
    (
        "ClaimBroadcast",
        "Lost",
        "a refund by the seller 6 blocks deep, or the htlc funding gone past the timeout",
    ),
];

swap_states! {
    BuyerState, BUYER_TRANSITIONS;
    pending: [Requested, Accepting, Accepted, Funded, Paying, Claiming, ClaimBroadcast],
    succeeded: [Claimed],
    failed: [Aborted, Lost],
}

/// The seller's (the locker's) transition table (the diagrams in `spec/diagrams/` are generated
/// from it). A loop out starts in `AwaitingInvoice`, a loop in (the locker as taker) in
/// `Requested`.
pub const SELLER_TRANSITIONS: &[Transition] = &[
    (
        "Requested",
        "AwaitingInvoice",
        "loop in: swap_accept passes the taker's checks / create the invoice",
    ),
    (
        "Requested",
        "Aborted",
        "loop in: a failed check (send swap_abort), error, swap_abort or user abort",
    ),
    (
        "AwaitingInvoice",
        "Accepted",
        "invoices created / loop out: send swap_accept; fund (with a prepay: once it is received)",
    ),
    ("AwaitingInvoice", "Aborted", "swap_abort, user abort, timeout too close; loop in: error"),
    (
        "Accepted",
        "Funded",
        "funding built / persist, broadcast, send swap_funded (loop in: with the invoice)",
    ),
    (
        "Accepted",
        "Aborted",
        "swap_abort, user abort, funding failed, the prepay unpaid at its expiry; loop in: error",
    ),
    ("Funded", "Paid", "payment claimable in time / claim it"),
    ("Funded", "RefundingCooperatively", "swap_abort / send coop_refund_request"),
    ("Funded", "Refunding", "tip >= timeout / refund leaf"),
    ("Funded", "Claimed", "a claim by the claimer 6 blocks deep (preimage leaked)"),
    ("RefundingCooperatively", "Refunding", "coop_refund_response / broadcast"),
    ("RefundingCooperatively", "Funded", "no answer in 30 s or bad signature"),
    (
        "RefundingCooperatively",
        "Claimed",
        "a claim by the claimer 6 blocks deep (preimage out: a late settlement)",
    ),
    ("Paid", "Claimed", "a claim by the claimer 6 blocks deep"),
    ("Paid", "Funded", "the claim never settled (payment failed back) / refundable again"),
    ("Refunding", "Refunded", "our refund 6 blocks deep (out again if a reorg drops it)"),
    ("Refunding", "Claimed", "a claim by the claimer 6 blocks deep instead"),
];

swap_states! {
    SellerState, SELLER_TRANSITIONS;
    pending: [
        Requested,
        AwaitingInvoice,
        Accepted,
        Funded,
        Paid,
        RefundingCooperatively,
        Refunding,
    ],
    succeeded: [Claimed],
    failed: [Refunded, Aborted],
}
