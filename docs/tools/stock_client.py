#!/usr/bin/env python3
"""A minimal Perpetua client in Python, written from docs/protocol.md alone.

It shows that the page is enough to talk to stockd from another language: QUIC with ALPN
perpetua/2, the hello with a token, length-prefixed frames, postcard varints and zigzag, a Submit
of movements (with lots, serial numbers and allocations), the reads of levels, lots, serial
numbers, SKU settings and channel availability, and the outcomes with their sequence numbers or
reasons.

The encoders and decoders need nothing but the standard library (`import stock_client` works
anywhere); talking to a server needs `pip install aioquic`. Run in the folder where stockd was
started:

    python3 docs/tools/stock_client.py receive SKU-1 dc 10
    python3 docs/tools/stock_client.py receive MILK dc 24 --lot L7 --expires-at 1900000000000
    python3 docs/tools/stock_client.py receive PHONE dc --serial SN-1 --serial SN-2
    python3 docs/tools/stock_client.py sell SKU-1 dc 3 --channel web
    python3 docs/tools/stock_client.py allocate SKU-1 dc web 5
    python3 docs/tools/stock_client.py sku-settings GIFT --kit SOAP:2,TOWEL:1
    python3 docs/tools/stock_client.py level SKU-1 dc
    python3 docs/tools/stock_client.py lots MILK dc
    python3 docs/tools/stock_client.py serial PHONE SN-1
    python3 docs/tools/stock_client.py available SKU-1 dc web
    python3 docs/tools/stock_client.py --server 127.0.0.1:7400 --data-dir ./data sku-settings GIFT
"""

import argparse
import asyncio
import json
import os
import struct
import uuid

PROTOCOL_VERSION = 2
ALPN = "perpetua/2"

REASONS = [
    "insufficient_stock", "unknown_hold", "hold_expired", "idempotency_mismatch", "invalid_quantity",
    "quantity_overflow", "invalid_field", "same_location", "hold_line_missing", "invalid_expiry",
    "invalid_lines", "invalid_settings", "storage_failure", "shutting_down", "unknown_lot", "lot_expired",
    "invalid_lot", "lot_required", "invalid_serials", "serial_in_stock", "serial_not_in_stock",
    "serial_not_sold", "kit_not_stocked", "invalid_kit", "invalid_allocation",
]
ROLES = ["admin", "checkout", "warehouse", "reader"]
SERIAL_STATUSES = ["in_stock", "reserved", "sold", "written_off"]

# MovementKind variant indexes (protocol.md section 7).
RECEIVE, EXPECT, SELL, RETURN, ADJUST, COUNT, TRANSFER, RESERVE = 0, 1, 2, 3, 4, 5, 6, 7
COMMIT, RELEASE, SET_SETTINGS, EXPIRE, ALLOCATE, SET_SKU_SETTINGS, COMPLETE_COMMIT = 8, 9, 10, 11, 12, 13, 14


# --- postcard (protocol.md section 4) -------------------------------------------------------

def varint(n):
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def zigzag(n):
    return varint((n << 1) ^ (n >> 63))


def string(s):
    b = s.encode()
    return varint(len(b)) + b


def option(value, encode):
    return b"\x00" if value is None else b"\x01" + encode(value)


def vec(items, encode):
    return varint(len(items)) + b"".join(encode(i) for i in items)


def boolean(b):
    return b"\x01" if b else b"\x00"


class Reader:
    def __init__(self, data):
        self.data, self.pos = data, 0

    def u8(self):
        self.pos += 1
        return self.data[self.pos - 1]

    def varint(self):
        shift = value = 0
        while True:
            b = self.u8()
            value |= (b & 0x7F) << shift
            if b < 0x80:
                return value
            shift += 7

    def zigzag(self):
        z = self.varint()
        return (z >> 1) ^ -(z & 1)

    def string(self):
        n = self.varint()
        self.pos += n
        return self.data[self.pos - n:self.pos].decode()

    def option(self, decode):
        return decode() if self.u8() == 1 else None

    def vec(self, decode):
        return [decode() for _ in range(self.varint())]

    def bool(self):
        return self.u8() == 1


# --- shared types (section 7) ------------------------------------------------------------------

def units(lot=None, lot_expires_at=None, serials=()):
    """Units: a lot (with its expiry when new), serial numbers, or neither (any units)."""
    return option(lot, string) + option(lot_expires_at, varint) + vec(list(serials), string)


ANY_UNITS = units()


def line(sku, location, qty, unit_price=None, line_units=ANY_UNITS):
    # Line: sku, location, qty, unit_price, units, kit (None: the engine marks kit components)
    return string(sku) + string(location) + zigzag(qty) + option(unit_price, zigzag) + line_units + b"\x00"


def movement(kind_index, fields, key, channel="python"):
    # Movement: key, channel, reference, occurred_at, kind
    return option(key, string) + string(channel) + b"\x00" + b"\x00" + varint(kind_index) + fields


def receive(sku, location, qty, unit_cost=None, lot=None, lot_expires_at=None, serials=()):
    return string(sku) + string(location) + zigzag(qty) + option(unit_cost, zigzag) + units(lot, lot_expires_at, serials)


def sell(sku, location, qty, unit_price=None, hold=None, allow_negative=False, lot=None, serials=()):
    return (string(sku) + string(location) + zigzag(qty) + option(unit_price, zigzag) + option(hold, varint)
            + boolean(allow_negative) + units(lot, None, serials))


def reserve(lines, expires_at):
    return varint(0) + vec(lines, lambda l: l) + varint(expires_at)


def allocate(sku, location, channel, qty):
    return string(sku) + string(location) + string(channel) + zigzag(qty)


def sku_settings(serial_tracked=False, expiry_warning_days=None, components=()):
    # SkuSettings: serial_tracked, expiry_warning_days Option<u16>, components Vec<(sku, qty)>
    return (boolean(serial_tracked) + option(expiry_warning_days, varint)
            + vec(list(components), lambda c: string(c[0]) + zigzag(c[1])))


def set_sku_settings(sku, settings):
    return string(sku) + settings


# --- messages (sections 5 and 6) --------------------------------------------------------------

def frame(request_id, body):
    payload = varint(request_id) + body
    return struct.pack("<I", len(payload)) + payload


def hello(token):
    return varint(0) + varint(PROTOCOL_VERSION) + string(token) + string("stock_client.py")


def submit(movements):
    return varint(1) + vec(movements, lambda m: m)


def level_request(sku, location):
    return varint(2) + string(sku) + string(location)


def level_detail_request(sku, location):
    return varint(13) + string(sku) + string(location)


def serial_request(sku, serial):
    return varint(14) + string(sku) + string(serial)


def get_sku_settings_request(sku):
    return varint(15) + string(sku)


def available_for_request(sku, location, channel):
    return varint(16) + string(sku) + string(location) + string(channel)


def read_level_view(r):
    names = ["on_hand", "reserved", "unsellable", "incoming", "safety_stock", "available"]
    sku, location = r.string(), r.string()
    return dict(sku=sku, location=location, **{n: r.zigzag() for n in names})


def read_lot_view(r):
    return dict(sku=r.string(), location=r.string(), lot=r.string(), expires_at=r.varint(), on_hand=r.zigzag(),
                reserved=r.zigzag(), expired=r.bool())


def read_level_detail(r):
    return dict(
        level=read_level_view(r),
        lots=r.vec(lambda: read_lot_view(r)),
        allocations=r.vec(lambda: dict(channel=r.string(), qty=r.zigzag())),
        loose_on_hand=r.zigzag(),
    )


def read_serial_view(r):
    out = dict(sku=r.string(), serial=r.string(), location=r.string())
    status = SERIAL_STATUSES[r.varint()]
    out["status"] = status
    out["hold"] = r.varint() if status == "reserved" else None
    out["history"] = r.vec(lambda: dict(seq=r.varint(), at=r.varint(), what=r.string(), location=r.string()))
    return out


def read_sku_settings(r):
    return dict(
        serial_tracked=r.bool(),
        expiry_warning_days=r.option(r.varint),
        components=r.vec(lambda: dict(sku=r.string(), qty=r.zigzag())),
    )


def read_response(payload):
    r = Reader(payload)
    request_id, variant = r.varint(), r.varint()
    if variant == 0:  # Welcome
        version, role, token_id, server, durable = r.varint(), r.varint(), r.string(), r.string(), r.varint()
        return request_id, ("welcome", dict(version=version, role=ROLES[role], server=server, durable_seq=durable))
    if variant == 1:  # Error
        return request_id, ("error", (r.string(), r.string()))
    if variant == 2:  # Outcomes
        results = []
        for _ in range(r.varint()):
            seq = r.option(r.varint)
            if r.varint() == 0:  # Ok(Detail)
                detail = r.varint()
                extra = {0: lambda: None, 1: lambda: ("hold", r.varint()), 2: lambda: ("variance", r.zigzag())}[detail]()
                results.append(dict(seq=seq, accepted=True, detail=extra))
            else:
                results.append(dict(seq=seq, accepted=False, reason=REASONS[r.varint()]))
        return request_id, ("outcomes", results)
    if variant == 3:  # Level
        return request_id, ("level", r.option(lambda: read_level_view(r)))
    if variant == 14:  # LevelDetail
        return request_id, ("level_detail", r.option(lambda: read_level_detail(r)))
    if variant == 15:  # Serial
        return request_id, ("serial", r.option(lambda: read_serial_view(r)))
    if variant == 16:  # SkuSettings
        return request_id, ("sku_settings", read_sku_settings(r))
    if variant == 17:  # AvailableFor
        return request_id, ("available_for", r.option(r.zigzag))
    return request_id, ("other", variant)


# --- QUIC -----------------------------------------------------------------------------------

try:
    from aioquic.asyncio import connect
    from aioquic.asyncio.protocol import QuicConnectionProtocol
    from aioquic.quic.configuration import QuicConfiguration
    from aioquic.quic.events import StreamDataReceived
except ImportError:  # the codec above works without it
    QuicConnectionProtocol = None

if QuicConnectionProtocol is not None:
    class Client(QuicConnectionProtocol):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.buffers, self.waiters = {}, {}

        def quic_event_received(self, event):
            if isinstance(event, StreamDataReceived):
                buf = self.buffers.setdefault(event.stream_id, bytearray())
                buf.extend(event.data)
                while len(buf) >= 4:
                    (n,) = struct.unpack_from("<I", buf)
                    if len(buf) < 4 + n:
                        break
                    request_id, answer = read_response(bytes(buf[4:4 + n]))
                    del buf[:4 + n]
                    waiter = self.waiters.pop(request_id, None)
                    if waiter:
                        waiter.set_result(answer)

        async def request(self, stream_id, request_id, body):
            self.waiters[request_id] = asyncio.get_running_loop().create_future()
            self._quic.send_stream_data(stream_id, frame(request_id, body))
            self.transmit()
            return await asyncio.wait_for(self.waiters[request_id], 10)


def request_of(a):
    """The request body a command line asks for."""
    key = str(uuid.uuid4())
    if a.command == "level":
        return level_request(a.sku, a.location)
    if a.command == "lots":
        return level_detail_request(a.sku, a.location)
    if a.command == "serial":
        return serial_request(a.sku, a.serial)
    if a.command == "available":
        return available_for_request(a.sku, a.location, a.channel)
    if a.command == "allocate":
        return submit([movement(ALLOCATE, allocate(a.sku, a.location, a.channel, a.qty), key)])
    serials = [s for group in a.serial for s in group.split(",")] if getattr(a, "serial", None) else []
    qty = a.qty if a.qty is not None else len(serials)
    if a.command == "receive":
        fields = receive(a.sku, a.location, qty, lot=a.lot, lot_expires_at=a.expires_at, serials=serials)
        return submit([movement(RECEIVE, fields, key, a.channel)])
    if a.command == "sell":
        fields = sell(a.sku, a.location, qty, lot=a.lot, serials=serials)
        return submit([movement(SELL, fields, key, a.channel)])
    raise SystemExit("unknown command %s" % a.command)


async def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--server", default="127.0.0.1:7400")
    p.add_argument("--data-dir", default="./data")
    p.add_argument("--token", default=os.environ.get("PERPETUA_TOKEN"))
    sub = p.add_subparsers(dest="command", required=True)
    for name in ["receive", "sell"]:
        c = sub.add_parser(name)
        c.add_argument("sku")
        c.add_argument("location")
        c.add_argument("qty", type=int, nargs="?", help="default: the number of --serial")
        c.add_argument("--lot")
        if name == "receive":
            c.add_argument("--expires-at", type=int, help="a new lot's expiry, ms since the Unix epoch")
        c.add_argument("--serial", action="append", default=[], help="repeatable, or comma-separated")
        c.add_argument("--channel", default="python")
    c = sub.add_parser("allocate")
    for arg in ["sku", "location", "channel"]:
        c.add_argument(arg)
    c.add_argument("qty", type=int)
    for name, args in [("level", ["sku", "location"]), ("lots", ["sku", "location"]),
                       ("serial", ["sku", "serial"]), ("available", ["sku", "location", "channel"])]:
        c = sub.add_parser(name)
        for arg in args:
            c.add_argument(arg)
    c = sub.add_parser("sku-settings", help="show, or change with any flag (the rest is kept)")
    c.add_argument("sku")
    c.add_argument("--serial-tracked", choices=["true", "false"])
    c.add_argument("--expiry-warning-days", type=int)
    c.add_argument("--kit", help="COMPONENT:QTY,COMPONENT:QTY (empty: not a kit)")
    a = p.parse_args()
    if QuicConnectionProtocol is None:
        raise SystemExit("stock_client.py needs aioquic to talk to a server: pip install aioquic")
    host, port = a.server.rsplit(":", 1)
    token = a.token or open(os.path.join(a.data_dir, "admin.token")).read().strip()
    config = QuicConfiguration(is_client=True, alpn_protocols=[ALPN], server_name="localhost")
    config.load_verify_locations(os.path.join(a.data_dir, "tls", "cert.pem"))
    async with connect(host, int(port), configuration=config, create_protocol=Client) as client:
        stream = client._quic.get_next_available_stream_id()
        kind, answer = await client.request(stream, 0, hello(token))
        if kind != "welcome":
            raise SystemExit(f"refused: {answer}")
        if a.command == "sku-settings":
            _, current = await client.request(stream, 1, get_sku_settings_request(a.sku))
            if a.serial_tracked is None and a.expiry_warning_days is None and a.kit is None:
                print(json.dumps(["sku_settings", current]))
                return
            if a.serial_tracked is not None:
                current["serial_tracked"] = a.serial_tracked == "true"
            if a.expiry_warning_days is not None:
                current["expiry_warning_days"] = a.expiry_warning_days
            if a.kit is not None:
                current["components"] = [dict(sku=c.rsplit(":", 1)[0], qty=int(c.rsplit(":", 1)[1]))
                                         for c in a.kit.split(",") if c]
            settings = sku_settings(current["serial_tracked"], current["expiry_warning_days"],
                                    [(c["sku"], c["qty"]) for c in current["components"]])
            body = submit([movement(SET_SKU_SETTINGS, set_sku_settings(a.sku, settings), str(uuid.uuid4()))])
        else:
            body = request_of(a)
        print(json.dumps(await client.request(stream, 2, body)))


if __name__ == "__main__":
    asyncio.run(main())
