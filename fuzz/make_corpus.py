#!/usr/bin/env python3
"""Writes the seed corpus of Looper's fuzz targets (fuzz/corpus/<target>/) from the spec vectors.

Run from anywhere: `python3 fuzz/make_corpus.py`. Standard library only. Every file name says which
vector (or which scripted swap) it came from; docs/fuzzing.md describes the layout of each target's
input. The output is deterministic, so a re-run on unchanged vectors changes nothing.
"""

import hashlib
import hmac
import json
import os
import shutil
import struct

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VECTORS = os.path.join(ROOT, "spec", "vectors")
CORPUS = os.path.join(ROOT, "fuzz", "corpus")

# Larger vectors (the size-limit cases) are left out: the corpus stays small.
MAX_SEED_BYTES = 8 * 1024


def compact(obj):
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


def write(target, name, data):
    if len(data) > MAX_SEED_BYTES:
        return
    d = os.path.join(CORPUS, target)
    os.makedirs(d, exist_ok=True)
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
    with open(os.path.join(d, safe), "wb") as f:
        f.write(data)


def load(name):
    with open(os.path.join(VECTORS, name), encoding="utf-8") as f:
        return json.load(f)


# --- envelope and offer: spec/vectors/messages.json -----------------------------------------

def vector_bytes(v):
    if "raw" in v:
        return v["raw"].encode()
    data = compact(v["json"])
    pad = v.get("pad_to_bytes")
    if pad:
        data = data + b" " * max(0, pad - len(data))
    return data


def messages():
    valid = []
    for v in load("messages.json"):
        data = vector_bytes(v)
        target = "offer" if v["kind"] == "offer" else "envelope"
        write(target, v["name"], data)
        if v["kind"] == "envelope" and v.get("valid") and isinstance(v.get("json"), dict):
            valid.append(v["json"])
    return valid


# --- offer_event: spec/vectors/nostr.json ---------------------------------------------------

def offer_events(nostr):
    event = nostr["offer_event"]["event"]
    write("offer_event", "vector", compact(event))
    no_expiration = dict(event, tags=[t for t in event["tags"] if t[0] != "expiration"])
    write("offer_event", "no_expiration_tag", compact(no_expiration))
    other_d = dict(event, tags=[["d", "other"] if t[0] == "d" else t for t in event["tags"]])
    write("offer_event", "d_tag_differs", compact(other_d))
    offer = json.loads(event["content"])
    offer["network"] = "bitcoin"
    write("offer_event", "mainnet_offer", compact(dict(event, content=json.dumps(offer))))
    write("offer_event", "withdrawn_empty_content", compact(dict(event, content="")))


# --- gift_wrap: spec/vectors/nostr.json -----------------------------------------------------

SWAP_MESSAGE_KIND = 8667


def event_id(pubkey, created_at, kind, tags, content):
    ser = json.dumps([0, pubkey, created_at, kind, tags, content], separators=(",", ":"),
                     ensure_ascii=False)
    return hashlib.sha256(ser.encode()).hexdigest()


def rumor(pubkey, recipient, content, kind=SWAP_MESSAGE_KIND, tags=None):
    tags = [["p", recipient]] if tags is None else tags
    created_at = 1_795_460_869
    return compact({
        "id": event_id(pubkey, created_at, kind, tags, content),
        "pubkey": pubkey,
        "created_at": created_at,
        "kind": kind,
        "tags": tags,
        "content": content,
    })


def gift_wraps(nostr, envelopes):
    gw = nostr["gift_wrap"]
    write("gift_wrap", "mode0_vector_gift_wrap", b"\x00" + compact(gw["event"]))
    sender, me = gw["sender_pubkey"], gw["recipient_pubkey"]
    envelope = compact(gw["envelope"]).decode()
    write("gift_wrap", "mode1_honest_swap_request", b"\x01\x00" + rumor(sender, me, envelope))
    for i, env in enumerate(envelopes[1:6]):
        write("gift_wrap", f"mode1_honest_{env['type']}_{i}",
              b"\x01\x00" + rumor(sender, me, compact(env).decode()))
    flags = {
        "seal_by_other_key": 0b0001,
        "seal_for_other_key": 0b0010,
        "wrap_for_other_key": 0b0100,
        "wrap_wrong_kind": 0b1000,
        "wrap_claims_pow_8": 0b0100000,
    }
    for name, f in flags.items():
        write("gift_wrap", f"mode1_{name}", bytes([1, f]) + rumor(sender, me, envelope))
    write("gift_wrap", "mode1_rumor_kind_14", b"\x01\x00" + rumor(sender, me, envelope, kind=14))
    write("gift_wrap", "mode1_rumor_for_other", b"\x01\x00" + rumor(sender, sender, envelope))
    write("gift_wrap", "mode1_rumor_by_other", b"\x01\x00" + rumor(me, me, envelope))
    seal = {"id": "00" * 32, "pubkey": sender, "created_at": 1_795_460_869, "kind": 13, "tags": [],
            "content": "AAAA", "sig": "00" * 64}
    write("gift_wrap", "mode2_seal_bad_signature", b"\x02" + compact(seal))


# --- invoice ----------------------------------------------------------------------------------

N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
CHARSET = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"


def bip32_hardened(seed, path):
    """The private key at a hardened path below the master key of `seed` (BIP-0032)."""
    i = hmac.new(b"Bitcoin seed", seed, hashlib.sha512).digest()
    key, chain = int.from_bytes(i[:32], "big"), i[32:]
    for index in path:
        data = b"\x00" + key.to_bytes(32, "big") + struct.pack(">I", index | 0x80000000)
        i = hmac.new(chain, data, hashlib.sha512).digest()
        key, chain = (int.from_bytes(i[:32], "big") + key) % N, i[32:]
    return key.to_bytes(32, "big")


def seller_payment_hash():
    """`SwapKeys::derive(master([1; 32]), 0).payment_hash()` (spec 03, "Key derivation")."""
    secret = bip32_hardened(bytes([1] * 32), [0, 3])
    preimage = hashlib.sha256(b"looper/preimage" + secret).digest()
    return hashlib.sha256(preimage).digest()


def bech32_polymod(values):
    gen = [0x3B6A57B2, 0x26508E6D, 0x1EA119FA, 0x3D4233DD, 0x2A1462B3]
    chk = 1
    for v in values:
        b = chk >> 25
        chk = (chk & 0x1FFFFFF) << 5 ^ v
        for i in range(5):
            chk ^= gen[i] if ((b >> i) & 1) else 0
    return chk


def bech32_encode(hrp, data):
    values = [ord(x) >> 5 for x in hrp] + [0] + [ord(x) & 31 for x in hrp] + data
    polymod = bech32_polymod(values + [0] * 6) ^ 1
    checksum = [(polymod >> 5 * (5 - i)) & 31 for i in range(6)]
    return hrp + "1" + "".join(CHARSET[d] for d in data + checksum)


def to5(data):
    acc, bits, out = 0, 0, []
    for b in data:
        acc = (acc << 8) | b
        bits += 8
        while bits >= 5:
            bits -= 5
            out.append((acc >> bits) & 31)
    if bits:
        out.append((acc << (5 - bits)) & 31)
    return out


def int5(value, length=None):
    out = []
    while value:
        out.append(value & 31)
        value >>= 5
    out = out[::-1] or [0]
    if length is not None:
        out = [0] * (length - len(out)) + out
    return out


def tagged(tag, data5):
    return [CHARSET.index(tag)] + int5(len(data5), 2) + data5


def invoice(hrp, payment_hash, created_at, expiry, cltv, description, sig_byte):
    data = int5(created_at, 7)
    data += tagged("p", to5(payment_hash))
    data += tagged("s", to5(bytes([42] * 32)))
    data += tagged("d", to5(description.encode()))
    data += tagged("x", int5(expiry))
    data += tagged("c", int5(cltv))
    data += tagged("9", int5((1 << 8) | (1 << 14)))  # var_onion_optin, payment_secret required
    # Not a signature by the offer's key (no secp256k1 here): the buyer refuses it on the payee
    # check at the latest; mode 1 of the target signs the invoices that get further.
    sig = hashlib.sha256(bytes([sig_byte])).digest() + hashlib.sha256(b"s").digest() + b"\x00"
    data += to5(sig)
    return bech32_encode(hrp, data).encode()


def invoices(envelopes):
    start_time = 1_800_000_000  # fuzz/src/lib.rs START_TIME
    h = seller_payment_hash()
    # 200 000 sat + swap fee 1 500 + funding fee 300 (fuzz/src/lib.rs offer and AMOUNT_SAT).
    write("invoice", "mode0_regtest_quote_amount", b"\x00" + invoice(
        "lnbcrt2018u", h, start_time, 3600, 42, "fuzz", 1))
    write("invoice", "mode0_mainnet", b"\x00" + invoice("lnbc2018u", h, start_time, 3600, 42, "x", 2))
    write("invoice", "mode0_no_amount", b"\x00" + invoice("lnbcrt", h, start_time, 3600, 42, "x", 3))
    write("invoice", "mode0_expired", b"\x00" + invoice("lnbcrt2018u", h, start_time - 7200, 60, 42,
                                                         "x", 4))
    write("invoice", "mode0_big_cltv", b"\x00" + invoice("lnbcrt2018u", h, start_time, 3600, 500, "x",
                                                          5))
    for i, env in enumerate(a for a in envelopes if a.get("type") == "swap_accept"):
        write("invoice", f"mode0_spec_vector_{i}", b"\x00" + env["invoice"].encode())

    # Mode 1: the `Fields` of fuzz_targets/invoice.rs as `arbitrary` reads them: currency u8,
    # AmountChoice (u32 variant index), right_hash bool, created_secs_ago i32, expiry_secs u32,
    # min_final_cltv u16, right_signer bool, payee_field u8, then the description.
    def fields(currency=0, amount=b"\x00\x00\x00\x00", right_hash=1, ago=0, expiry=3600, cltv=42,
               right_signer=1, payee=0, desc=b"fuzz"):
        return (b"\x01" + bytes([currency]) + amount + bytes([right_hash]) + struct.pack("<i", ago)
                + struct.pack("<I", expiry) + struct.pack("<H", cltv) + bytes([right_signer, payee])
                + desc)

    write("invoice", "mode1_valid", fields())
    write("invoice", "mode1_valid_payee_field", fields(payee=1))
    write("invoice", "mode1_wrong_signer", fields(right_signer=0))
    write("invoice", "mode1_wrong_hash", fields(right_hash=0))
    write("invoice", "mode1_mainnet", fields(currency=1))
    write("invoice", "mode1_amount_off", fields(amount=struct.pack("<I", 0x40000000) + b"\x01\x00"))
    write("invoice", "mode1_no_amount", fields(amount=struct.pack("<I", 0xC0000000)))
    write("invoice", "mode1_expired", fields(ago=7200, expiry=60))
    write("invoice", "mode1_cltv_too_big", fields(cltv=200))


# --- state_machines ---------------------------------------------------------------------------

# Op bytes of looper_fuzz::pair::Pair::run_bytes (after its first byte, the direction): `op % 20`
# picks the step, bit 5 of `op` the
# party (0: buyer, 1: seller), bit 7 a variant; arguments follow.
TO_BUYER, TO_SELLER = 0, 40          # deliver (arg: queue index)
MINE = 7                             # arg: blocks - 1
ADVANCE = 10                         # arg: seconds
PAY_ARRIVES, PAY_UNDERPAID = 12, 152  # arg: payment index
PAY_FAILS, PAY_NOT_SENT = 13, 133    # arg: payment index
PAY_RESULT = 14
RESTART_BUYER, RESTART_SELLER = 16, 56
CRASH_BUYER, CRASH_SELLER = 17, 57   # arg: persists to go
ABORT_BUYER, ABORT_SELLER = 18, 58
FUNDING_FAILS = 139
ALTER_TO_BUYER, ALTER_TO_SELLER = 4, 44   # args: index, field, how, 4 value bytes
REPLAY_TO_BUYER, REPLAY_TO_SELLER = 5, 45  # arg: history index
FORGE_TO_BUYER, FORGE_TO_SELLER = 6, 46    # arg: kind
DROP_TO_BUYER, DROP_TO_SELLER = 2, 42
REORG = 9

OPEN = [TO_SELLER, 0, TO_BUYER, 0, TO_BUYER, 0]        # request, accept, funded
PAY = [MINE, 0, PAY_ARRIVES, 0, PAY_RESULT]            # confirm, pay, preimage
COOP_CLAIM = [TO_SELLER, 0, TO_BUYER, 0, MINE, 0]      # request, response, confirm


def state_machine_seeds():
    seeds = {
        "cooperative_claim": OPEN + PAY + COOP_CLAIM,
        "script_claim_seller_silent": OPEN + PAY + [DROP_TO_SELLER, 0, ADVANCE, 40, MINE, 0],
        "buyer_aborts_funded_coop_refund": OPEN + [ABORT_BUYER, TO_SELLER, 0, TO_BUYER, 0,
                                                   TO_SELLER, 0, MINE, 0],
        "payment_never_arrives_refund_leaf": OPEN + [MINE, 7] * 20,
        "payment_fails_then_retried": OPEN + [MINE, 0, PAY_FAILS, 0, PAY_RESULT, ADVANCE, 20]
        + [PAY_ARRIVES, 0, PAY_RESULT] + COOP_CLAIM,
        "payment_not_sent_then_retried": OPEN + [MINE, 0, PAY_NOT_SENT, 0, PAY_RESULT, ADVANCE, 20]
        + [PAY_ARRIVES, 0, PAY_RESULT] + COOP_CLAIM,
        "underpaid_failed_back": OPEN + [MINE, 0, PAY_UNDERPAID, 0, PAY_RESULT, ADVANCE, 20, MINE, 0],
        "seller_crash_after_paid": OPEN + [MINE, 0, CRASH_SELLER, 0, PAY_ARRIVES, 0, PAY_RESULT]
        + COOP_CLAIM,
        "buyer_crash_in_paying": OPEN + [CRASH_BUYER, 0, MINE, 0, PAY_ARRIVES, 0, PAY_RESULT]
        + COOP_CLAIM,
        "restarts_resend": OPEN + [RESTART_BUYER, RESTART_SELLER, TO_SELLER, 0, TO_SELLER, 1] + PAY
        + COOP_CLAIM,
        "funding_fails": [FUNDING_FAILS, TO_SELLER, 0, TO_BUYER, 0, TO_BUYER, 0],
        "seller_user_abort_funded": OPEN + [ABORT_SELLER, TO_BUYER, 0, TO_SELLER, 0, TO_SELLER, 0,
                                            MINE, 0],
        "altered_accept": [TO_SELLER, 0, ALTER_TO_BUYER, 0, 3, 0, 1, 0, 0, 0, TO_BUYER, 0, MINE, 0],
        "altered_claim_response": OPEN + PAY + [TO_SELLER, 0, ALTER_TO_BUYER, 0, 1, 0, 5, 0, 0, 0,
                                                ADVANCE, 40, MINE, 0],
        "replayed_refund_request": OPEN + [ABORT_BUYER, TO_SELLER, 0, TO_BUYER, 0,
                                           REPLAY_TO_BUYER, 2, TO_SELLER, 0, TO_SELLER, 0, MINE, 0],
        "forged_abort_after_paying": OPEN + [MINE, 0, FORGE_TO_SELLER, 0, PAY_ARRIVES, 0,
                                             PAY_RESULT] + COOP_CLAIM,
        "reorg_of_funding": OPEN + [MINE, 0, REORG, MINE, 0, PAY_ARRIVES, 0, PAY_RESULT]
        + COOP_CLAIM,
        "late_payment_after_timeout": OPEN + [MINE, 0] + [MINE, 7] * 16 + [PAY_ARRIVES, 0,
                                                                         PAY_RESULT],
    }
    # Loop in: the seller (the locker) asks, the buyer (the maker) accepts, the seller funds and
    # sends its invoice; from there the same steps by money role.
    open_in = [TO_BUYER, 0, TO_SELLER, 0, TO_BUYER, 0]  # request, accept, funded
    loop_in = {
        "in_cooperative_claim": open_in + PAY + COOP_CLAIM,
        "in_script_claim_seller_silent": open_in + PAY + [DROP_TO_SELLER, 0, ADVANCE, 40, MINE, 0],
        "in_buyer_aborts_funded_coop_refund": open_in + [ABORT_BUYER, TO_SELLER, 0, TO_BUYER, 0,
                                                         TO_SELLER, 0, MINE, 0],
        "in_payment_never_arrives_refund_leaf": open_in + [MINE, 7] * 20,
        "in_request_dropped_then_resent": [DROP_TO_BUYER, 0, RESTART_SELLER] + open_in + PAY
        + COOP_CLAIM,
        "in_crash_requested_and_accepting": [CRASH_SELLER, 0, RESTART_SELLER, TO_BUYER, 0,
                                             CRASH_BUYER, 0, RESTART_BUYER, TO_SELLER, 0,
                                             TO_BUYER, 0] + PAY + COOP_CLAIM,
        "in_altered_accept": [TO_BUYER, 0, ALTER_TO_SELLER, 0, 3, 0, 1, 0, 0, 0, TO_BUYER, 0,
                              MINE, 0],
        "in_funding_fails": [FUNDING_FAILS] + open_in,
    }
    # The first byte is the direction: 0 loop out, 1 loop in.
    for name, ops in seeds.items():
        write("state_machines", name, bytes([0] + ops))
    for name, ops in loop_in.items():
        write("state_machines", name, bytes([1] + ops))


def main():
    shutil.rmtree(CORPUS, ignore_errors=True)
    valid_envelopes = messages()
    nostr = load("nostr.json")
    offer_events(nostr)
    gift_wraps(nostr, valid_envelopes)
    invoices(valid_envelopes)
    state_machine_seeds()
    total = 0
    for d, _, files in os.walk(CORPUS):
        total += sum(os.path.getsize(os.path.join(d, f)) for f in files)
    print(f"corpus: {sum(len(f) for _, _, f in os.walk(CORPUS))} files, {total} bytes")


if __name__ == "__main__":
    main()
