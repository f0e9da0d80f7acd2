#!/usr/bin/env python3
"""Reads a Perpetua data directory's write-ahead log and checkpoints, written from docs/wal.md alone.

Format version 2 (lots, serial numbers, kits, channel allocations).

Standard library only. Prints one JSON object per line on standard output:

    {"file": ..., "offset": ..., "seq": 3, "shard": 0, "type": "movement", "recorded_at": ...,
     "body_hash": "c0ed...", "movement": {...}, "outcome": {...}, "effects": {...}}
    {"file": ..., "offset": ..., "seq": 19, "shard": 0, "type": "nop"}

and, with --checkpoints, one {"checkpoint": ...} object per checkpoint file first.

Every checksum is verified (segment header, record header, record payload, checkpoint header
and payload), sequence numbers must be contiguous within and across segments (except a gap
between two segments that the newest valid checkpoint covers), every record type must be known
and every payload must decode completely. A torn tail (an incomplete or damaged last record of
the last segment with nothing but zeros after it, or a last segment too short for its header,
as a crash leaves) is reported on standard error and ends the listing with exit status 0, like
the engine accepts it (the engine also truncates or removes it; this reader never writes).
Anything else that is wrong is reported on standard error with exit status 2.

Usage:
    read_wal.py DATA_DIR [--checkpoints] [--from-seq N]
"""

import argparse
import json
import os
import re
import struct
import sys

# ---------------------------------------------------------------- constants (docs/wal.md)

SEGMENT_MAGIC = b"PRPTWAL1"
CHECKPOINT_MAGIC = b"PRPTCKP1"
FORMAT_VERSION = 2
SEGMENT_HEADER_LEN = 32
RECORD_HEADER_LEN = 24
CHECKPOINT_HEADER_LEN = 32
RECORD_PAYLOAD_BYTES_MAX = 1 << 20
RECORD_TYPE_MOVEMENT = 1
RECORD_TYPE_NOP = 2
RECORD_TYPE_MOVEMENT_ALERTS = 3  # a movement whose effects raise at least one alert
HOLD_SHARD_BITS = 16

SHARDS_MAX = 16
ORDER_QTY_UNSET = 0xFFFFFFFF  # u32::MAX in a checkpoint's Level.order_qty

SEGMENT_NAME = re.compile(r"^([0-9]+)\.wal$")
CHECKPOINT_NAME = re.compile(r"^checkpoint-([0-9]+)\.ckpt$")

# ---------------------------------------------------------------- CRC32C (Castagnoli)


def _crc32c_table():
    poly = 0x82F63B78  # 0x1EDC6F41 bit-reversed
    table = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ poly if c & 1 else c >> 1
        table.append(c)
    return table


_CRC_TABLE = _crc32c_table()


def crc32c(data):
    crc = 0xFFFFFFFF
    table = _CRC_TABLE
    for b in data:
        crc = table[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


assert crc32c(b"123456789") == 0xE3069283, "CRC32C check value"
assert crc32c(b"") == 0

# ---------------------------------------------------------------- postcard primitives


class DecodeError(Exception):
    pass


class Postcard:
    """A cursor over postcard bytes."""

    def __init__(self, data):
        self.data = data
        self.pos = 0

    def at_end(self):
        return self.pos == len(self.data)

    def u8(self):
        if self.pos >= len(self.data):
            raise DecodeError("unexpected end of payload")
        b = self.data[self.pos]
        self.pos += 1
        return b

    def _varint(self, bits):
        # Unsigned LEB128, at most ceil(bits / 7) bytes; the last possible byte may only carry
        # the bits that are left (postcard rejects anything else).
        max_bytes = (bits + 6) // 7
        last_max = (1 << (bits % 7)) - 1
        out = 0
        for i in range(max_bytes):
            b = self.u8()
            out |= (b & 0x7F) << (7 * i)
            if b & 0x80 == 0:
                if i == max_bytes - 1 and b > last_max:
                    raise DecodeError("varint too large for u%d" % bits)
                return out
        raise DecodeError("varint longer than %d bytes" % max_bytes)

    def u16(self):
        return self._varint(16)

    def u32(self):
        return self._varint(32)

    def u64(self):
        return self._varint(64)

    def u128(self):
        return self._varint(128)

    def usize(self):  # lengths: usize is 64 bits on the machines that write the log
        return self._varint(64)

    def i64(self):
        z = self.u64()
        return (z >> 1) ^ -(z & 1)

    def bool(self):
        b = self.u8()
        if b > 1:
            raise DecodeError("bad bool byte %d" % b)
        return b == 1

    def string(self):
        n = self.usize()
        if self.pos + n > len(self.data):
            raise DecodeError("string runs past the end of the payload")
        raw = self.data[self.pos:self.pos + n]
        self.pos += n
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise DecodeError("string is not UTF-8")

    def option(self, read):
        tag = self.u8()
        if tag == 0:
            return None
        if tag == 1:
            return read()
        raise DecodeError("bad option tag %d" % tag)

    def vec(self, read):
        return [read() for _ in range(self.usize())]

    def variant(self, names, what):
        i = self.u32()
        if i >= len(names):
            raise DecodeError("unknown %s variant %d" % (what, i))
        return names[i]


# ---------------------------------------------------------------- payload types


RETURN_CONDITIONS = ["restock", "damaged"]
ADJUST_REASONS = ["correction", "shrinkage", "damaged", "found", "promotion"]
REASONS = [
    "insufficient_stock", "unknown_hold", "hold_expired", "idempotency_mismatch",
    "invalid_quantity", "quantity_overflow", "invalid_field", "same_location",
    "hold_line_missing", "invalid_expiry", "invalid_lines", "invalid_settings",
    "storage_failure", "shutting_down",
    # format version 2:
    "unknown_lot", "lot_expired", "invalid_lot", "lot_required", "invalid_serials",
    "serial_in_stock", "serial_not_in_stock", "serial_not_sold", "kit_not_stocked",
    "invalid_kit", "invalid_allocation",
]
ALERT_KINDS = ["reorder", "out_of_stock", "lot_expiring", "lot_expired"]
DETAILS = ["none", "hold", "variance"]
SERIAL_STATUSES = ["in_stock", "reserved", "sold", "written_off"]


def units(p):
    """Units: which lot or serial numbers a movement line is about (docs/wal.md 9.4)."""
    return {"lot": p.option(p.string), "lot_expires_at": p.option(p.u64), "serials": p.vec(p.string)}


def kit_ref(p):
    """KitRef: the kit a component line was expanded from, kits, price per kit (docs/wal.md 9.4)."""
    return {"sku": p.string(), "qty": p.i64(), "unit_price": p.option(p.i64)}


def line(p):
    return {
        "sku": p.string(), "location": p.string(), "qty": p.i64(), "unit_price": p.option(p.i64),
        "units": units(p), "kit": p.option(lambda: kit_ref(p)),
    }


def component(p):
    return {"sku": p.string(), "qty": p.i64()}


def sku_settings(p):
    return {
        "serial_tracked": p.bool(),
        "expiry_warning_days": p.option(p.u16),
        "components": p.vec(lambda: component(p)),
    }


def settings(p):
    return {
        "reorder_point": p.option(p.i64),
        "reorder_qty": p.option(p.i64),
        "max_qty": p.option(p.i64),
        "safety_stock": p.i64(),
        "lead_time_days": p.u16(),
    }


def hold_view(hold):
    """A hold id with its parts spelled out: counter and mask of shards."""
    return {"id": hold, "counter": hold >> HOLD_SHARD_BITS,
            "shards": [s for s in range(HOLD_SHARD_BITS) if hold >> s & 1]}


# (name, [(field, reader)]) in declaration order: the index in this list is the variant index.
MOVEMENT_KINDS = [
    ("receive", [("sku", "s"), ("location", "s"), ("qty", "q"), ("unit_cost", "oq"), ("units", "units")]),
    ("expect", [("sku", "s"), ("location", "s"), ("qty", "q")]),
    ("sell", [("sku", "s"), ("location", "s"), ("qty", "q"), ("unit_price", "oq"),
              ("hold", "oh"), ("allow_negative", "b"), ("units", "units")]),
    ("return", [("sku", "s"), ("location", "s"), ("qty", "q"), ("condition", "cond"),
                ("unit_price", "oq"), ("units", "units")]),
    ("adjust", [("sku", "s"), ("location", "s"), ("delta", "q"), ("reason", "reason"),
                ("allow_negative", "b"), ("units", "units")]),
    ("count", [("sku", "s"), ("location", "s"), ("counted", "q"), ("units", "units")]),
    ("transfer", [("sku", "s"), ("from", "s"), ("to", "s"), ("qty", "q"), ("units", "units")]),
    ("reserve", [("hold", "h"), ("lines", "lines"), ("expires_at", "u")]),
    ("commit", [("hold", "h")]),
    ("release", [("hold", "h")]),
    ("set_settings", [("sku", "s"), ("location", "s"), ("settings", "settings")]),
    ("expire", [("holds_expired_by", "u"), ("keys_seen_before", "u"), ("keys_max", "u")]),
    # format version 2:
    ("allocate", [("sku", "s"), ("location", "s"), ("channel", "s"), ("qty", "q")]),
    ("set_sku_settings", [("sku", "s"), ("settings", "sku_settings")]),
    ("complete_commit", [("hold", "h")]),
]

FIELD_READERS = {
    "s": lambda p: p.string(),
    "q": lambda p: p.i64(),
    "u": lambda p: p.u64(),
    "b": lambda p: p.bool(),
    "h": lambda p: p.u64(),
    "oq": lambda p: p.option(p.i64),
    "oh": lambda p: p.option(p.u64),
    "cond": lambda p: p.variant(RETURN_CONDITIONS, "ReturnCondition"),
    "reason": lambda p: p.variant(ADJUST_REASONS, "AdjustReason"),
    "lines": lambda p: p.vec(lambda: line(p)),
    "settings": settings,
    "units": units,
    "sku_settings": sku_settings,
}


def movement_kind(p):
    i = p.u32()
    if i >= len(MOVEMENT_KINDS):
        raise DecodeError("unknown MovementKind variant %d" % i)
    name, fields = MOVEMENT_KINDS[i]
    out = {"kind": name}
    for field, reader in fields:
        out[field] = FIELD_READERS[reader](p)
    return out


def movement(p):
    m = {
        "key": p.option(p.string),
        "channel": p.string(),
        "reference": p.option(p.string),
        "occurred_at": p.option(p.u64),
    }
    m.update(movement_kind(p))
    return m


def outcome(p):
    tag = p.u32()  # Result: Ok = 0, Err = 1
    if tag == 0:
        detail = p.variant(DETAILS, "Detail")
        if detail == "none":
            return {"ok": "none"}
        if detail == "hold":
            return {"ok": {"hold": p.u64()}}
        return {"ok": {"variance": p.i64()}}
    if tag == 1:
        return {"err": p.variant(REASONS, "Reason")}
    raise DecodeError("bad Result variant %d" % tag)


def level_view(p):
    return {
        "sku": p.string(), "location": p.string(), "on_hand": p.i64(), "reserved": p.i64(),
        "unsellable": p.i64(), "incoming": p.i64(), "safety_stock": p.i64(), "available": p.i64(),
    }


def alert(p):
    return {
        "kind": p.variant(ALERT_KINDS, "AlertKind"), "sku": p.string(), "location": p.string(),
        "available": p.i64(), "reorder_point": p.option(p.i64),
        # Lot alerts: the lot's code and expiry, a tuple (String, u64).
        "lot": p.option(lambda: {"lot": p.string(), "expires_at": p.u64()}),
    }


def lot_view(p):
    return {
        "sku": p.string(), "location": p.string(), "lot": p.string(), "expires_at": p.u64(),
        "on_hand": p.i64(), "reserved": p.i64(), "expired": p.bool(),
    }


def effects(p):
    return {
        "levels": p.vec(lambda: level_view(p)),
        "alerts": p.vec(lambda: alert(p)),
        "holds_closed": p.vec(p.u64),
        "lots": p.vec(lambda: lot_view(p)),
    }


def movement_payload(payload):
    p = Postcard(payload)
    out = {"recorded_at": p.u64()}
    # xxh3-64 of the whole movement as submitted (0 without an idempotency key): docs/wal.md 10.4.
    out["body_hash"] = "%016x" % p.u64()
    out["movement"] = movement(p)
    out["outcome"] = outcome(p)
    out["effects"] = effects(p)
    if not p.at_end():
        raise DecodeError("%d bytes left after the effects" % (len(payload) - p.pos))
    return out


# ---------------------------------------------------------------- checkpoint payload

LEVEL_FLAGS = [(1, "order_up_to_max"), (2, "reorder_alerted"), (4, "out_of_stock_alerted")]


def lot_record(p):
    return {
        "lot": p.string(), "expires_at": p.u64(), "on_hand": p.i64(), "reserved": p.i64(),
        "expired": p.bool(), "warned": p.bool(),
    }


def level_record(p):
    sku, location = p.string(), p.string()
    lv = {
        "on_hand": p.i64(), "reserved": p.i64(), "unsellable": p.i64(), "incoming": p.i64(),
        "safety_stock": p.i64(), "reorder_point": p.i64(), "order_qty": p.u32(),
        "lead_time_days": p.u16(), "flags": p.u8(),
    }
    lots = p.vec(lambda: lot_record(p))
    allocations = p.vec(lambda: {"channel": p.string(), "qty": p.i64()})
    reorder_point = None if lv["reorder_point"] == -1 else lv["reorder_point"]
    order_qty = None if lv["order_qty"] == ORDER_QTY_UNSET else lv["order_qty"]
    up_to_max = bool(lv["flags"] & 1)
    return {
        "sku": sku,
        "location": location,
        "level": lv,
        "lots": lots,
        "allocations": allocations,
        # Derived, as the engine reports them:
        "flag_names": [n for bit, n in LEVEL_FLAGS if lv["flags"] & bit],
        "available": lv["on_hand"] - lv["reserved"] - lv["unsellable"] - lv["safety_stock"],
        "settings": {
            "reorder_point": reorder_point,
            "reorder_qty": None if up_to_max else order_qty,
            "max_qty": order_qty if up_to_max else None,
            "safety_stock": lv["safety_stock"],
            "lead_time_days": lv["lead_time_days"],
        },
    }


def hold_line_record(p):
    return {
        "sku": p.string(), "location": p.string(), "qty": p.i64(), "unit_price": p.option(p.i64),
        "lots": p.vec(lambda: {"lot": p.string(), "qty": p.i64()}),
        "serials": p.vec(p.string),
        "from_alloc": p.i64(),
        "kit": p.option(lambda: kit_ref(p)),
    }


def hold_record(p):
    return {"id": p.u64(), "expires_at": p.u64(), "channel": p.string(), "lines": p.vec(lambda: hold_line_record(p))}


def serial_view(p):
    out = {"sku": p.string(), "serial": p.string(), "location": p.string()}
    status = p.variant(SERIAL_STATUSES, "SerialStatus")
    out["status"] = status
    out["hold"] = p.u64() if status == "reserved" else None
    out["history"] = p.vec(lambda: {"seq": p.u64(), "at": p.u64(), "what": p.string(), "location": p.string()})
    return out


def key_entry(p):
    key_hash = p.u128()
    return {
        "key_hash": "%032x" % key_hash,
        "body_hash": "%016x" % p.u64(),
        "seen_at": p.u64(),
        "seq": p.u64(),
        "outcome": outcome(p),
    }


def shard_snapshot(p):
    return {
        "last_seq": p.u64(),
        "levels": p.vec(lambda: level_record(p)),
        "holds": p.vec(lambda: hold_record(p)),
        "keys": p.vec(lambda: key_entry(p)),
        "sku_settings": p.vec(lambda: {"sku": p.string(), "settings": sku_settings(p)}),
        "lot_expiry": p.vec(lambda: {"sku": p.string(), "lot": p.string(), "expires_at": p.u64()}),
        "serials": p.vec(lambda: serial_view(p)),
        "committed_split_holds": p.vec(lambda: {"committed_at": p.u64(), "hold": p.u64()}),
    }


def read_checkpoint(path):
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < CHECKPOINT_HEADER_LEN:
        raise DecodeError("shorter than its header")
    h = data[:CHECKPOINT_HEADER_LEN]
    magic = h[0:8]
    version, shard_count, payload_len, payload_crc, header_crc = struct.unpack_from("<IIQII", h, 8)
    if magic != CHECKPOINT_MAGIC:
        raise DecodeError("bad magic %r" % magic)
    if crc32c(h[0:28]) != header_crc:
        raise DecodeError("header checksum mismatch")
    if version != FORMAT_VERSION:
        raise DecodeError("format version %d" % version)
    payload = data[CHECKPOINT_HEADER_LEN:]
    if len(payload) != payload_len:
        raise DecodeError("payload is %d bytes, header says %d" % (len(payload), payload_len))
    if crc32c(payload) != payload_crc:
        raise DecodeError("payload checksum mismatch")
    p = Postcard(payload)
    body = {"taken_at": p.u64(), "hold_counter": p.u64(), "shards": p.vec(lambda: shard_snapshot(p))}
    if not p.at_end():
        raise DecodeError("%d bytes left after the body" % (len(payload) - p.pos))
    if len(body["shards"]) != shard_count:
        raise DecodeError("header says %d shards, payload has %d" % (shard_count, len(body["shards"])))
    body["covered_seq"] = min((s["last_seq"] for s in body["shards"]), default=0)
    return body


def newest_valid_checkpoint(data_dir):
    """(covered_seq, body) of the newest checkpoint that verifies, as recovery picks it, or None."""
    for seq, path in reversed(listing(os.path.join(data_dir, "checkpoints"), CHECKPOINT_NAME)):
        try:
            body = read_checkpoint(path)
        except DecodeError:
            continue
        return body["covered_seq"], body
    return None


# ---------------------------------------------------------------- segments


class Torn(Exception):
    pass


class Corrupt(Exception):
    pass


def decode_segment_header(h):
    if len(h) < SEGMENT_HEADER_LEN:
        raise Corrupt("segment header is %d bytes, expected %d" % (len(h), SEGMENT_HEADER_LEN))
    if h[0:8] != SEGMENT_MAGIC:
        raise Corrupt("bad magic %r" % h[0:8])
    version, reserved1, first_seq, reserved2, header_crc = struct.unpack_from("<IIQII", h, 8)
    if crc32c(h[0:28]) != header_crc:
        raise Corrupt("segment header checksum mismatch")
    if version != FORMAT_VERSION:
        raise Corrupt("segment format version %d" % version)
    return first_seq


def records(data):
    """Yields (offset, header dict, payload) for each record of a segment's bytes; raises Torn or
    Corrupt (with the offset) where the records stop making sense (docs/wal.md section 6)."""
    pos = SEGMENT_HEADER_LEN
    while pos < len(data):
        rest = data[pos:]
        if not any(rest):
            raise Torn((pos, "zero-filled tail"))
        if len(rest) < RECORD_HEADER_LEN:
            raise Torn((pos, "incomplete record header"))
        payload_len, rtype, version, shard, seq, payload_crc, header_crc = struct.unpack_from("<IBBHQII", rest, 0)
        if crc32c(rest[0:20]) != header_crc:
            if not any(rest[RECORD_HEADER_LEN:]):
                raise Torn((pos, "last record header damaged, nothing after it"))
            raise Corrupt((pos, "record header checksum mismatch"))
        if version != FORMAT_VERSION:
            raise Corrupt((pos, "record format version %d" % version))
        if payload_len > RECORD_PAYLOAD_BYTES_MAX:
            raise Corrupt((pos, "record payload length %d is over the limit" % payload_len))
        end = RECORD_HEADER_LEN + payload_len
        if len(rest) < end:
            raise Torn((pos, "incomplete record payload"))
        payload = rest[RECORD_HEADER_LEN:end]
        if crc32c(payload) != payload_crc:
            if not any(rest[end:]):
                raise Torn((pos, "last record's payload checksum mismatch"))
            raise Corrupt((pos, "record payload checksum mismatch"))
        yield pos, {"type": rtype, "shard": shard, "seq": seq}, payload
        pos += end


def read_meta(data_dir):
    """The shard count, read as the engine reads it (docs/wal.md section 3)."""
    path = os.path.join(data_dir, "engine.meta")
    with open(path, encoding="utf-8", newline="") as f:
        # Lines end with "\n" (a "\r" before it is dropped), as Rust's str::lines splits them.
        lines = [t[:-1] if t.endswith("\r") else t for t in f.read().split("\n")]
    if not any(text.strip() == "format = 2" for text in lines):
        fail("%s has no `format = 2` line: written by another version" % path)
    for text in lines:
        if text.startswith("shards = "):
            value = text[len("shards = "):].strip()
            if re.fullmatch(r"\+?[0-9]+", value) and 1 <= int(value) <= SHARDS_MAX:
                return int(value)
            break  # the engine reads the first such line only
    fail("%s has no valid `shards = N` line" % path)


def listing(directory, pattern):
    out = []
    for name in os.listdir(directory):
        m = pattern.match(name)
        if m:
            out.append((int(m.group(1)), os.path.join(directory, name)))
    out.sort()
    return out


def emit(obj):
    sys.stdout.write(json.dumps(obj, ensure_ascii=False) + "\n")


def fail(msg):
    sys.stderr.write("read_wal: %s\n" % msg)
    sys.exit(2)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("data_dir", help="the engine's data directory (holds engine.meta, wal/, checkpoints/)")
    ap.add_argument("--checkpoints", action="store_true", help="also decode and print every checkpoint first")
    ap.add_argument("--from-seq", type=int, default=0, help="print only records with seq >= N (default: all)")
    args = ap.parse_args()

    shards = read_meta(args.data_dir)
    if args.checkpoints:
        for seq, path in listing(os.path.join(args.data_dir, "checkpoints"), CHECKPOINT_NAME):
            try:
                body = read_checkpoint(path)
            except DecodeError as e:
                fail("%s: %s" % (path, e))
            if body["covered_seq"] != seq:
                sys.stderr.write("read_wal: warning: %s is named for seq %d but covers %d\n"
                                 % (path, seq, body["covered_seq"]))
            if len(set(s["last_seq"] for s in body["shards"])) > 1:
                # This engine writes one cut: every shard's last_seq is the covered sequence number.
                sys.stderr.write("read_wal: warning: %s: shards' last_seq differ (not one cut)\n" % path)
            emit({"file": os.path.basename(path), "checkpoint": body})

    segments = listing(os.path.join(args.data_dir, "wal"), SEGMENT_NAME)
    expected = None
    for i, (name_seq, path) in enumerate(segments):
        is_last = i + 1 == len(segments)
        fname = os.path.basename(path)
        with open(path, "rb") as f:
            data = f.read()
        try:
            first_seq = decode_segment_header(data)
        except Corrupt as e:
            if is_last and len(data) <= SEGMENT_HEADER_LEN:
                # A crash while the segment was being created: it holds no record.
                sys.stderr.write("read_wal: incomplete last segment %s (%d bytes): %s (the engine removes it)\n"
                                 % (fname, len(data), e))
                break
            fail("%s at offset 0: %s" % (fname, e))
        if first_seq != name_seq:
            fail("%s: header says it starts at %d, its name says %d" % (fname, first_seq, name_seq))
        if expected is None and first_seq > 1:
            # Older segments were pruned: a checkpoint must cover everything before this one.
            newest = newest_valid_checkpoint(args.data_dir)
            if newest is None or first_seq > newest[0] + 1:
                fail("%s: the log starts at %d but no valid checkpoint covers the sequence numbers before it"
                     % (fname, first_seq))
        if expected is not None and first_seq != expected:
            newest = newest_valid_checkpoint(args.data_dir) if expected < first_seq else None
            if newest is None or first_seq > newest[0] + 1:
                fail("%s: expected a segment starting at %d (a segment is missing)" % (fname, expected))
            if len(newest[1]["shards"]) != shards:
                fail("the newest valid checkpoint has %d shards, engine.meta says %d"
                     % (len(newest[1]["shards"]), shards))
            # Only after a power loss under Fsync::Never: the checkpoint has what the log lost.
            sys.stderr.write("read_wal: gap: sequence numbers %d to %d are in no segment; the newest "
                             "checkpoint covers them (up to %d)\n" % (expected, first_seq - 1, newest[0]))
        seq_expected = first_seq
        try:
            for offset, h, payload in records(data):
                where = "%s at offset %d" % (fname, offset)
                if h["seq"] != seq_expected:
                    fail("%s: sequence %d where %d was expected" % (where, h["seq"], seq_expected))
                seq_expected += 1
                if h["shard"] >= shards:
                    fail("%s: record of shard %d but the directory has %d" % (where, h["shard"], shards))
                if h["type"] not in (RECORD_TYPE_MOVEMENT, RECORD_TYPE_NOP, RECORD_TYPE_MOVEMENT_ALERTS):
                    fail("%s: unknown record type %d" % (where, h["type"]))
                if h["seq"] < args.from_seq:
                    continue
                out = {"file": fname, "offset": offset, "seq": h["seq"], "shard": h["shard"]}
                if h["type"] == RECORD_TYPE_NOP:
                    out["type"] = "nop"  # no payload is written; like the engine, ignore any
                else:
                    out["type"] = "movement"
                    try:
                        out.update(movement_payload(payload))
                    except DecodeError as e:
                        fail("%s: payload does not decode: %s" % (where, e))
                    if bool(out["effects"]["alerts"]) != (h["type"] == RECORD_TYPE_MOVEMENT_ALERTS):
                        fail("%s: record type %d does not match the %d alerts of its payload"
                             % (where, h["type"], len(out["effects"]["alerts"])))
                    m = out["movement"]
                    if isinstance(m.get("hold"), int):
                        m["hold_parts"] = hold_view(m["hold"])
                emit(out)
        except Torn as t:
            offset, why = t.args[0]
            if not is_last:
                fail("%s at offset %d: %s (in a segment that is not the last: corruption)" % (fname, offset, why))
            sys.stderr.write("read_wal: torn tail in %s at offset %d: %s (the engine cuts it off)\n" % (fname, offset, why))
        except Corrupt as c:
            offset, why = c.args[0]
            fail("%s at offset %d: %s" % (fname, offset, why))
        expected = seq_expected
    sys.stderr.write("read_wal: %d segment(s), next sequence number %s\n"
                     % (len(segments), expected if expected is not None else "unknown"))


if __name__ == "__main__":
    try:
        main()
    except BrokenPipeError:  # e.g. piped into `head`
        sys.stderr.close()
        sys.exit(0)
