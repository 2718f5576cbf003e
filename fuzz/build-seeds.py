#!/usr/bin/env python3
"""Builds the hand-made fuzz seeds of the targets whose input is a control
byte or records rather than a captured packet: agent, tftp_client, validator,
imagemap and journal (see each target's doc comment for its input format).

agent: unsigned request and response datagrams (the target signs them);
tftp_client: whole transfers (lock-step, OACK with tsize, windowed,
blksize 8), a server ERROR, a stray; validator: questions,
the agent's answers, a built response, time passing; imagemap: the DHCP
payloads of seeds/dhcp/ (run extract-seeds.py first) with client MACs and
addresses set to known ones, then read requests; journal: index and
image-map journals (puts, a removal, a torn tail). The seed folders are
rebuilt from scratch, so a rerun changes nothing. Run from anywhere:
python3 fuzz/build-seeds.py
"""
import hashlib
import json
import pathlib
import shutil
import struct

here = pathlib.Path(__file__).resolve().parent
TS = 1_700_000_000_000  # milliseconds since the Unix epoch


def write(target, name, blob):
    d = here / "seeds" / target
    d.mkdir(parents=True, exist_ok=True)
    (d / name).write_bytes(bytes(blob))


def agent_header(kind, request_id):
    return b"BA" + bytes([1, kind]) + struct.pack(">QQQ", TS, 0x0102030405060708, request_id)


def agent():
    # Control byte: bits 0-1 how it is signed (0: the shared key), bit 2 a
    # flipped byte, bits 3-4 the agent's answer, bits 5-7 its clock (4: on time).
    on_time = 4 << 5
    path = b"pxelinux.0"
    req = agent_header(1, 42) + bytes([0xAB] * 32) + struct.pack(">H", len(path)) + path
    write("agent", "request", [on_time] + list(req))
    write("agent", "request-stale", [on_time | 1 << 3] + list(req))
    write("agent", "request-tampered", [on_time | 4] + list(req))
    write("agent", "request-late", [7 << 5] + list(req))
    state = struct.pack(">QQ", 123_456, 9) + bytes([3] * 32)
    write("agent", "response-current", [on_time] + list(agent_header(2, 42) + b"\x00" + state))
    write("agent", "response-stale", [on_time] + list(agent_header(2, 42) + b"\x01" + state))
    write("agent", "response-unknown", [on_time] + list(agent_header(2, 42) + b"\x02"))
    write("agent", "unsigned", [3] + list(agent_header(1, 1)))


def oack(**opts):
    out = b"\x00\x06"
    for k, v in opts.items():
        out += k.encode() + b"\x00" + str(v).encode() + b"\x00"
    return out


def tftp_client():
    # Records: control, length, bytes. Control bit 0: a stray port; bit 3 a
    # time step; bit 5 built DATA blocks (length = count, bit 4 x16, bit 2
    # the last one short, bits 6-7 the block shift, 2 = the next block).
    def raw(pkt, ctl=0):
        return [ctl, len(pkt)] + list(pkt)

    def blocks(n, short=True, x16=False):
        return [0x80 | 0x20 | (0x10 if x16 else 0) | (4 if short else 0), n]

    # Options: byte 0 bits 0-1 blksize (None, 8, 512, 1468), bits 2-3
    # windowsize (None, 1, 4, 64), bit 4 tsize, bits 5-6 retries; byte 1 bits
    # 0-1 max_size (4 GiB, 3000, 600000, 0).
    write("tftp_client", "plain", [0x20, 0, 0] + blocks(5))
    size = 2 * 1468 + 734
    write("tftp_client", "oack-tsize", [0x53, 0, 0] + raw(oack(blksize=1468, tsize=size)) + blocks(3))
    write("tftp_client", "windowed",
          [0x02 | 3 << 2 | 0x10 | 0x20, 0, 0] + raw(oack(blksize=512, windowsize=64, tsize=160 * 512 + 256))
          + blocks(10, short=False, x16=True) + blocks(1))
    write("tftp_client", "blksize-8",
          [0x01 | 0x20, 0, 0] + raw(oack(blksize=8)) + blocks(200, short=False, x16=True) + blocks(3))
    write("tftp_client", "too-large", [0x10 | 0x20, 1, 0] + raw(oack(tsize=5000)))
    write("tftp_client", "server-error", [0x20, 0, 0] + raw(b"\x00\x05\x00\x01File not found\x00"))
    write("tftp_client", "stray",
          [0x20, 0, 0] + blocks(1, short=False) + raw(b"\x00\x03\x00\x02" + bytes(100), ctl=1) + blocks(2))


def validator():
    # cfg: bits 0-1 max_tries - 1, bit 2 a 5 s answer cache, bits 3-4
    # max_cached - 1. Records: control, length, bytes; control bits 0-1 the
    # action: 0 ask, 1 time passes, 2 the agent answers, 3 a built response.
    ask = [0, 0]
    ask_kernel = [1 << 4, 0]
    agent_answers = [2, 0]
    later = [1 | 20 << 2, 0]  # 1 s
    body = bytes([0]) + struct.pack(">QQ", 10, 1) + bytes(32)
    built = [3 | 4 | 4 << 5, len(body)] + list(body)  # to the pending question, signed, on time
    forged = [3 | 4 | 8 | 4 << 5, len(body)] + list(body)
    write("validator", "answered", [0x05] + ask + agent_answers + ask + later + ask)
    write("validator", "built-answer", [0x01] + ask_kernel + built + forged)
    write("validator", "unreachable", [0x02] + ask + later + later + later + ask_kernel + later)


def imagemap():
    # bounds: bits 0-2 max_clients, bits 3-5 max files per client, bit 6 save
    # and load back. Records: control, u16 length, bytes.
    dhcp = sorted((here / "seeds" / "dhcp").iterdir())
    recs = []
    for i, p in enumerate(dhcp):
        payload = p.read_bytes()
        op = payload[0]
        ports = 0 if op == 1 else 1  # client to server, or server to client
        ctl = 0x80 | (i & 3) << 5 | ports << 1
        recs += [ctl, *struct.pack(">H", len(payload)), *payload]
    rrq = []
    for i, name in enumerate([b"pxelinux.0", b"boot/vmlinuz", b"../../etc/passwd", b"\xff\xfe\x00x"]):
        ctl = 1 | (i & 3) << 1 | (i & 1) << 3 | (i & 1) << 5
        rrq += [ctl, *struct.pack(">H", len(name)), *name]
    write("imagemap", "dhcp-then-tftp", [0x40 | 3 << 3 | 4] + recs + rrq)
    write("imagemap", "tftp-only", [2 << 3 | 1] + rrq + rrq)


def journal_line(record):
    # As slowpath::journal::encode writes it: JSON, a tab, the first 8 bytes
    # of the JSON's SHA-256 in hex, a newline.
    body = json.dumps(record, separators=(",", ":")).encode()
    return body + b"\t" + hashlib.sha256(body).hexdigest()[:16].encode() + b"\n"


def journal():
    # First byte: bit 0 also open a cache with it, bit 1 as the image map's
    # journal (else the index's). The rest: the journal.
    sha = "ab" * 32
    entry = {"server": "10.0.0.1", "name": "boot/x.efi", "size": 10, "sha256": sha,
             "first_seen": 1, "last_seen": 2, "times_seen": 1, "stored_as": "00-" + sha}
    index = (journal_line({"op": "put", "entry": entry})
             + journal_line({"op": "del", "server": "10.0.0.1", "name": "real.efi"})
             + journal_line({"op": "put", "entry": dict(entry, times_seen=2)}))
    t = {"secs_since_epoch": 1_700_000_000, "nanos_since_epoch": 0}
    client = {"mac": "02:00:00:00:00:01", "ip": "10.0.0.7", "uuid": None, "arch": 7,
              "pxe_class": None, "vendor_class": "PXEClient", "user_class": None,
              "boot_item": None, "boot": [],
              "files": [{"server": "10.0.0.1", "name": "ipxe.efi", "first_requested": t,
                         "last_requested": t, "times_requested": 1, "served_from": "origin"}],
              "first_seen": t, "last_seen": t}
    clients = (journal_line({"op": "put", "client": client})
               + journal_line({"op": "put", "client": dict(client, mac=None, ip="10.0.0.8")})
               + journal_line({"op": "del", "key": {"mac": "02:00:00:00:00:01"}}))
    write("journal", "index", b"\x00" + index)
    write("journal", "index-opened-torn", b"\x01" + index + index[:40])
    write("journal", "imagemap-opened", b"\x03" + clients)


for target in ("agent", "tftp_client", "validator", "imagemap", "journal"):
    shutil.rmtree(here / "seeds" / target, ignore_errors=True)
agent()
tftp_client()
validator()
imagemap()
journal()
for target in ("agent", "tftp_client", "validator", "imagemap", "journal"):
    print(target, len(list((here / "seeds" / target).iterdir())), "seeds")
