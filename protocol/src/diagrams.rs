//! State diagrams generated from the transition tables (`spec/diagrams/*.md`).
//!
//! `cargo run -p looper-protocol --example fsm-diagrams` writes them; a test fails when the
//! committed files differ from what the tables give.

use crate::buyer::BUYER_TRANSITIONS;
use crate::seller::SELLER_TRANSITIONS;
use crate::swap::mermaid;

/// `(file name, Markdown)` for each role's diagram.
pub fn state_diagrams() -> Vec<(&'static str, String)> {
    let header = "<!-- Generated from the transition tables in protocol/src/{buyer,seller}.rs by \
                  `cargo run -p looper-protocol --example fsm-diagrams`. Do not edit. -->\n\n";
    vec![
        (
            "buyer.md",
            format!(
                "{header}# Buyer: the claimer (loop out as taker, loop in as maker)\n\n\
                 A loop out starts in `Requested`, a loop in in `Accepting`. \
                 Point of no return: `Paying`.\n\n{}",
                mermaid("Buyer", BUYER_TRANSITIONS, "Requested", &["Claimed", "Aborted", "Lost"])
                    .replacen(
                        "    [*] --> Requested\n",
                        "    [*] --> Requested: loop out (taker)\n    [*] --> Accepting: loop in (maker)\n",
                        1
                    )
            ),
        ),
        (
            "seller.md",
            format!(
                "{header}# Seller: the locker (loop out as maker, loop in as taker)\n\n\
                 A loop out starts in `AwaitingInvoice`, a loop in in `Requested`. \
                 Point of no return: `Paid`.\n\n{}",
                mermaid(
                    "Seller",
                    SELLER_TRANSITIONS,
                    "AwaitingInvoice",
                    &["Claimed", "Refunded", "Aborted"]
                )
                .replacen(
                    "    [*] --> AwaitingInvoice\n",
                    "    [*] --> AwaitingInvoice: loop out (maker)\n    [*] --> Requested: loop in (taker)\n",
                    1
                )
            ),
        ),
    ]
}
