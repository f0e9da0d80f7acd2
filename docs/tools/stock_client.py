#!/usr/bin/env python3
"""A minimal Perpetua client in Python, written from docs/protocol.md alone.

It shows that the page is enough to talk to stockd from another language: QUIC with ALPN
perpetua/1, the hello with a token, length-prefixed frames, postcard varints and zigzag, a Submit
of movements, a Level read, and the outcomes with their sequence numbers or reasons.

Needs `pip install aioquic`. Run in the folder where stockd was started:

    python3 docs/tools/stock_client.py --server 127.0.0.1:7400 receive SKU-1 dc 10
    python3 docs/tools/stock_client.py sell SKU-1 dc 3
    python3 docs/tools/stock_client.py level SKU-1 dc
"""

import argparse
import asyncio
import os
import struct
import uuid

from aioquic.asyncio import connect
from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.events import StreamDataReceived

REASONS = [
    "insufficient_stock", "unknown_hold", "hold_expired", "idempotency_mismatch", "invalid_quantity",
    "quantity_overflow", "invalid_field", "same_location", "hold_line_missing", "invalid_expiry",
    "invalid_lines", "invalid_settings", "storage_failure", "shutting_down",
]
ROLES = ["admin", "checkout", "warehouse", "reader"]


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

    def bool(self):
        return self.u8() == 1


# --- messages (sections 5 to 7) ---------------------------------------------------------------

def frame(request_id, body):
    payload = varint(request_id) + body
    return struct.pack("<I", len(payload)) + payload


def hello(token):
    return varint(0) + varint(1) + string(token) + string("stock_client.py")


def movement(kind_index, fields, key):
    # Movement: key, channel, reference, occurred_at, kind
    return option(key, string) + string("python") + b"\x00" + b"\x00" + varint(kind_index) + fields


def submit(movements):
    return varint(1) + varint(len(movements)) + b"".join(movements)


def level_request(sku, location):
    return varint(2) + string(sku) + string(location)


def read_level_view(r):
    names = ["on_hand", "reserved", "unsellable", "incoming", "safety_stock", "available"]
    sku, location = r.string(), r.string()
    return dict(sku=sku, location=location, **{n: r.zigzag() for n in names})


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
    return request_id, ("other", variant)


# --- QUIC -----------------------------------------------------------------------------------

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


async def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--server", default="127.0.0.1:7400")
    p.add_argument("--data-dir", default="./data")
    p.add_argument("--token", default=os.environ.get("PERPETUA_TOKEN"))
    p.add_argument("command", choices=["receive", "sell", "level"])
    p.add_argument("sku")
    p.add_argument("location")
    p.add_argument("qty", type=int, nargs="?", default=1)
    a = p.parse_args()
    host, port = a.server.rsplit(":", 1)
    token = a.token or open(os.path.join(a.data_dir, "admin.token")).read().strip()
    config = QuicConfiguration(is_client=True, alpn_protocols=["perpetua/1"], server_name="localhost")
    config.load_verify_locations(os.path.join(a.data_dir, "tls", "cert.pem"))
    async with connect(host, int(port), configuration=config, create_protocol=Client) as client:
        stream = client._quic.get_next_available_stream_id()
        kind, answer = await client.request(stream, 0, hello(token))
        if kind != "welcome":
            raise SystemExit(f"refused: {answer}")
        if a.command == "level":
            print(await client.request(stream, 1, level_request(a.sku, a.location)))
            return
        if a.command == "receive":  # Receive: sku, location, qty, unit_cost
            fields = string(a.sku) + string(a.location) + zigzag(a.qty) + b"\x00"
            m = movement(0, fields, str(uuid.uuid4()))
        else:  # Sell: sku, location, qty, unit_price, hold, allow_negative
            fields = string(a.sku) + string(a.location) + zigzag(a.qty) + b"\x00" + b"\x00" + b"\x00"
            m = movement(2, fields, str(uuid.uuid4()))
        print(await client.request(stream, 1, submit([m])))


if __name__ == "__main__":
    asyncio.run(main())
