#!/usr/bin/env python3
"""Writes the seed corpora under Fuzz/Corpus/<target>/: a few valid inputs per decoder, by the
layouts in Sources/SegmentLog/FORMAT.md and Sources/PaxosTransport/WIRE.md. Byte 0 of every
seed is the target's control byte (see each target's header comment). Run from anywhere."""
import os, struct, zlib

here = os.path.dirname(os.path.abspath(__file__))

def put(target, name, data):
    os.makedirs(os.path.join(here, target), exist_ok=True)
    with open(os.path.join(here, target, name), "wb") as f:
        f.write(data)

# --- SegmentLog (little-endian) ---
def entry(slot, rnd, node, payload, noop=False):
    return struct.pack("<QQIBI", slot, rnd, node, 1 if noop else 0, len(payload)) + payload

def accepted(*entries):
    return struct.pack("<I", len(entries)) + b"".join(entries)

payloads = {  # RecordCodecFuzz type index: promise 0, accepted 1, chosen 2, snapshot 3, truncateSuffix 4
    "promise": (0, struct.pack("<QI", 3, 2)),
    "accepted": (1, accepted(entry(1, 1, 1, b"hello"), entry(2, 1, 1, b"", noop=True), entry(3, 2, 1, b"x" * 40))),
    "chosen": (2, struct.pack("<Q", 2)),
    "snapshot": (3, struct.pack("<Q", 1)),
    "truncate": (4, struct.pack("<Q", 3)),
}
for name, (index, payload) in payloads.items():
    put("RecordCodecFuzz", name, bytes([index]) + payload)
    put("RecordCodecFuzz", name + "-lz4", bytes([index | 0x80]) + payload)

types = {"promise": 1, "accepted": 2, "chosen": 3, "snapshot": 4, "truncate": 5}
def record(name, payload):  # CRC left zero: the target's control bit 1 sets it
    return struct.pack("<IIIBBH", 0, len(payload), len(payload), types[name], 0, 0) + payload
body = b"".join(record(n, payloads[n][1]) for n in ["promise", "accepted", "chosen"])
put("SegmentRecoveryFuzz", "three-records", bytes([0x03]) + body)
put("SegmentRecoveryFuzz", "three-records-tolerant", bytes([0x07]) + body + b"\xff" * 9)
put("SegmentRecoveryFuzz", "empty-segment", bytes([0x01]))

def snapshot(slot, data):
    header = struct.pack("<QHHIQQI", 0x504E_5347_4F4C_5850, 1, 0, 0, slot, len(data), zlib.crc32(data))
    return header + struct.pack("<I", zlib.crc32(header))
put("SnapshotReaderFuzz", "slot-7", bytes([0x00]) + snapshot(7, b"state machine bytes"))
put("SnapshotReaderFuzz", "any-slot", bytes([0x07]) + snapshot(12345, b"\x00" * 64))

# --- Wire (big-endian frames: length, CRC over length ++ body, type, payload) ---
def frame(ftype, payload):
    length = struct.pack(">I", 1 + len(payload))
    body = bytes([ftype]) + payload
    return length + struct.pack(">I", zlib.crc32(length + body)) + body

def s16(text):
    return struct.pack(">H", len(text)) + text

def short(data):  # shortbytes: u8 length
    return bytes([len(data)]) + data

version = struct.pack(">H", 2)  # WireVersion.current: hello is not parsed past another version
ballot = struct.pack(">QI", 2, 1)
wentry = struct.pack(">Q", 5) + ballot + b"\x01" + struct.pack(">I", 3) + b"abc"
messages = {
    1: ballot + struct.pack(">Q", 1),
    2: ballot + struct.pack(">QQI", 1, 0, 1) + wentry,
    3: ballot + struct.pack(">QI", 3, 2),
    4: ballot + struct.pack(">QQI", 5, 4, 2) + b"\x00" + b"\x01" + struct.pack(">I", 2) + b"hi",
    5: ballot + struct.pack(">QQ", 5, 6),
    6: ballot + struct.pack(">Q", 4),
    7: ballot + struct.pack(">QQ", 4, 6),
    8: struct.pack(">QQ", 1, 9),
    9: struct.pack(">QI", 4, 1) + wentry,
    10: struct.pack(">QQIQ", 100, 4096, 0xDEADBEEF, 100),
    11: struct.pack(">QQB", 100, 0, 1) + struct.pack(">I", 4) + b"data",
    12: struct.pack(">QQB", 100, 4, 0),
    13: ballot + struct.pack(">Q", 4),
    14: ballot + b"\x01" + struct.pack(">QI", 2, 3) + struct.pack(">Q", 4),
}
hello = frame(0x01, version + s16(b"cluster") + struct.pack(">BI", 1, 2) + short(b"n" * 32))
for mtype, body in messages.items():
    put("PeerFrameFuzz", "message-%02d" % mtype, b"\x00" + hello + frame(0x10, struct.pack(">IIB", 1, 2, mtype) + body))
put("PeerFrameFuzz", "welcome-auth-ready-refuse", b"\x00"
    + frame(0x02, version + s16(b"cluster") + struct.pack(">I", 1) + short(b"m" * 32) + b"\x01" + short(b"p" * 32))
    + frame(0x03, short(b"q" * 32)) + frame(0x04, b"") + frame(0x05, b"\x02" + s16(b"wrong cluster")))
put("PeerFrameFuzz", "hello-other-version", b"\x00" + frame(0x01, struct.pack(">H", 1) + s16(b"cluster")))

# Control byte 0x01 on both: the fuzzer then mutates bodies without keeping CRCs right.
put("ClientProtocolFuzz", "requests", b"\x01"
    + frame(0x20, struct.pack(">QB", 1, 1) + struct.pack(">I", 2) + struct.pack(">I", 3) + b"abc" + struct.pack(">I", 0))
    + frame(0x20, struct.pack(">QBQI", 2, 2, 1, 100))
    + frame(0x20, struct.pack(">QB", 3, 3)))
put("ClientProtocolFuzz", "responses", b"\x01"
    + frame(0x21, struct.pack(">QB", 1, 1) + struct.pack(">IQQ", 2, 7, 8))
    + frame(0x21, struct.pack(">QB", 2, 2) + b"\x01" + struct.pack(">I", 3) + b"\x01" + s16(b"10.0.0.3:7001"))
    + frame(0x21, struct.pack(">QB", 3, 3) + struct.pack(">H", 1) + s16(b"overloaded"))
    + frame(0x21, struct.pack(">QB", 4, 4) + struct.pack(">QI", 9, 1) + struct.pack(">QI", 8, 2) + b"hi")
    + frame(0x21, struct.pack(">QB", 5, 5) + struct.pack(">IB", 1, 1) + struct.pack(">I", 1) + ballot
            + struct.pack(">QQH", 8, 9, 1) + s16(b"role") + s16(b"leader")))
