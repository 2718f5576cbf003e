#!/usr/bin/env python3
"""A minimal PXE 2.1 client (stdlib only) for capture.sh.

Broadcasts a PXE DHCPDISCOVER (options 60, 93, 94, 97), reads the proxyDHCP
OFFER's boot menu (option 43, sub-option 9), then does boot server discovery:
a DHCPREQUEST to the server's UDP 4011 naming the first menu item (43/71),
and waits for the ACK. Usage: pxeclient.py SERVER_IP CLIENT_IP MAC
"""
import socket
import struct
import sys

server, client = sys.argv[1], sys.argv[2]
mac = bytes.fromhex(sys.argv[3].replace(":", ""))
UUID = bytes(range(0x10, 0x20))
COOKIE = b"\x63\x82\x53\x63"


def opt(code, data):
    return bytes([code, len(data)]) + data


def packet(msg_type, xid, ciaddr, extra=b""):
    hdr = struct.pack("!BBBBIHH4s4s4s4s16s64s128s", 1, 1, 6, 0, xid, 4, 0x8000,
                      socket.inet_aton(ciaddr), bytes(4), bytes(4), bytes(4),
                      mac, b"", b"")
    opts = (opt(53, bytes([msg_type]))
            + opt(57, struct.pack("!H", 1260))
            + opt(55, bytes([1, 3, 43, 60, 66, 67, 97, 128, 129]))
            + opt(97, b"\x00" + UUID)
            + opt(94, b"\x01\x02\x01")
            + opt(93, b"\x00\x00")
            + opt(60, b"PXEClient:Arch:00000:UNDI:002001")
            + extra + b"\xff")
    return hdr + COOKIE + opts


def options(pkt):
    out, i = {}, 240
    while i < len(pkt) and pkt[i] != 255:
        if pkt[i] == 0:
            i += 1
            continue
        out.setdefault(pkt[i], pkt[i + 2:i + 2 + pkt[i + 1]])
        i += 2 + pkt[i + 1]
    return out


s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
s.bind(("", 68))
s.settimeout(5)
s.sendto(packet(1, 0x5eed0001, "0.0.0.0"), ("255.255.255.255", 67))
while True:
    offer, _ = s.recvfrom(2048)
    if offer[4:8] == struct.pack("!I", 0x5eed0001):
        break
vendor = options(offer).get(43, b"")
item_type = 0
i = 0
while i + 1 < len(vendor) and vendor[i] != 255:
    code, length = vendor[i], vendor[i + 1]
    if code == 9 and length >= 2:
        item_type = struct.unpack("!H", vendor[i + 2:i + 4])[0]
        break
    i += 2 + length
boot_item = opt(71, struct.pack("!HH", item_type, 0)) + b"\xff"
s.sendto(packet(3, 0x5eed0002, client, opt(43, boot_item)), (server, 4011))
ack, _ = s.recvfrom(2048)
print("4011 ACK file:", ack[108:236].split(b"\0")[0].decode())
