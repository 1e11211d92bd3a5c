//! Figures for `docs/benchmarks.md` (issue 14): what a buyer's claim pays, block by block, when a
//! fee spike keeps it out of blocks until it pays enough (the rule of `looper_protocol::fees`),
//! and the size of claims batched into one transaction (`SpendTx` with several claim-leaf inputs).
//!
//! `cargo run -p looper-protocol --example fee_schedule`

use bitcoin::bip32::Xpriv;
use bitcoin::secp256k1::Secp256k1;
use bitcoin::{Amount, FeeRate, Network, OutPoint, ScriptBuf, Txid};
use looper_protocol::claims::batch_claim_vbytes;
use looper_protocol::fees::{
    spend_fee_rate, FeeEstimates, Outstanding, SpendFee, DEADLINE_SAFETY_BLOCKS,
};
use looper_protocol::htlc::{Htlc, HtlcParams};
use looper_protocol::keys::SwapKeys;
use looper_protocol::spend::{HtlcInput, SpendPath, SpendTx, CLAIM_SCRIPT_PATH_VBYTES};

type Res<T> = Result<T, Box<dyn std::error::Error>>;

const HTLC_SAT: u64 = 200_000;

/// A claim that went out `start_left` blocks before its deadline while the mempool refuses
/// anything under `spike` sat/vB and the estimates say `spike`; the buyer's cap is `cap`.
/// With `claims` > 1, the claims of that many such HTLCs in one batch (`plan_claims`' rule:
/// the value and size of the whole batch).
fn spike_table(spike: u64, cap: u64, start_left: u32, claims: u64) -> Res<()> {
    let vb = |n: u64| FeeRate::from_sat_per_vb(n).ok_or("fee rate");
    let estimates = FeeEstimates::flat(vb(spike)?);
    let vsize = batch_claim_vbytes(claims);
    let value = HTLC_SAT * claims;
    let spend = |left: u32| SpendFee {
        value_sat: value,
        vsize,
        target: 9,
        blocks_left: Some(left),
        cap: FeeRate::from_sat_per_vb(cap).unwrap_or(FeeRate::MAX),
    };
    let what = if claims == 1 {
        format!("claim-leaf claim {vsize} vB")
    } else {
        format!("{claims} such claims in one batch of {vsize} vB")
    };
    println!(
        "\nspike {spike} sat/vB, cap {cap} sat/vB, HTLC {HTLC_SAT} sat, {what} \
         (deadline = timeout - {DEADLINE_SAFETY_BLOCKS})"
    );
    println!("| blocks left to the deadline | claim rate (sat/vB) | claim fee (sat) | fee per HTLC (sat) | % of HTLC | mined |");
    println!("|---|---|---|---|---|---|");
    let mut rate = spend_fee_rate(&estimates, &spend(start_left), None).ok_or("no rate")?;
    for left in (0..=start_left).rev() {
        if left < start_left {
            let out = Outstanding { rate, stuck_blocks: 1 };
            if let Some(next) = spend_fee_rate(&estimates, &spend(left), Some(out)) {
                rate = next;
            }
        }
        let fee = rate.fee_vb(vsize).ok_or("fee")?.to_sat();
        let mined = rate.to_sat_per_kwu() >= spike * 250;
        println!(
            "| {left} | {} | {fee} | {} | {:.1} | {} |",
            rate.to_sat_per_kwu() / 250,
            fee.div_ceil(claims),
            fee as f64 * 100.0 / value as f64,
            if mined { "yes" } else { "no" }
        );
        if mined {
            break;
        }
    }
    Ok(())
}

/// vsize of `n` claims batched into one transaction (claim leaves, one P2TR output).
fn batch_table() -> Res<()> {
    let secp = Secp256k1::new();
    let master = |tag: u8| Xpriv::new_master(Network::Regtest, &[tag; 32]);
    let destination = {
        let keys = SwapKeys::derive(&master(3)?, 0)?;
        ScriptBuf::new_p2tr(&secp, keys.claim_pubkey(), None)
    };
    println!(
        "\n| claims in one transaction | vsize (vB) | vB per claim | saved vs separate claims |"
    );
    println!("|---|---|---|---|");
    for n in [1u32, 2, 5, 10, 20] {
        let mut inputs = Vec::new();
        for i in 0..n {
            let seller = SwapKeys::derive(&master(1)?, i)?;
            let buyer = SwapKeys::derive(&master(2)?, i)?;
            let htlc = Htlc::new(HtlcParams {
                payment_hash: seller.payment_hash(),
                claim_key: buyer.claim_pubkey(),
                refund_key: seller.refund_pubkey(),
                locker_musig_key: seller.musig_pubkey(),
                claimer_musig_key: buyer.musig_pubkey(),
                timeout_height: 1_000,
                network: Network::Regtest,
            })?;
            let txid: Txid = bitcoin::hashes::Hash::from_byte_array([i as u8 + 1; 32]);
            inputs.push(HtlcInput {
                htlc,
                outpoint: OutPoint { txid, vout: 0 },
                amount: Amount::from_sat(HTLC_SAT),
                path: SpendPath::ClaimScript,
            });
        }
        let rate = FeeRate::from_sat_per_vb(1).ok_or("fee rate")?;
        let spend = SpendTx::build(inputs, destination.clone(), rate)?;
        let vsize = spend.fee().to_sat(); // 1 sat/vB: the fee is the vsize
        assert_eq!(vsize, batch_claim_vbytes(u64::from(n)));
        let separate = u64::from(n) * CLAIM_SCRIPT_PATH_VBYTES;
        println!(
            "| {n} | {vsize} | {:.1} | {:.0}% |",
            vsize as f64 / f64::from(n),
            (separate - vsize) as f64 * 100.0 / separate as f64
        );
    }
    Ok(())
}

fn main() -> Res<()> {
    spike_table(600, 200, 20, 1)?;
    spike_table(600, 200, 20, 5)?;
    spike_table(150, 200, 20, 1)?;
    spike_table(2_000, 50, 12, 1)?;
    batch_table()
}
