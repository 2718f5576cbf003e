#!/usr/bin/env python3
"""Extracts fuzz seeds from crates/wire/testdata/*.pcap into seeds/<target>/.

tftp: UDP payloads of the TFTP captures; dhcp: those of the DHCP captures;
classify: whole Ethernet frames of every capture. The seed folders are
rebuilt from scratch, files named by content hash, so a rerun on the same
captures changes nothing. Run from anywhere: python3 fuzz/extract-seeds.py
"""
import hashlib
import pathlib
import shutil
import struct

here = pathlib.Path(__file__).resolve().parent
testdata = here.parent / "crates" / "wire" / "testdata"


def frames(pcap):
    data = pcap.read_bytes()
    assert struct.unpack_from("<I", data, 0)[0] == 0xA1B2C3D4
    at = 24
    while at < len(data):
        caplen = struct.unpack_from("<I", data, at + 8)[0]
        yield data[at + 16:at + 16 + caplen]
        at += 16 + caplen


def udp_payload(frame):
    ip = frame[14:]
    ihl = (ip[0] & 15) * 4
    udp = ip[ihl:]
    return udp[8:struct.unpack_from("!H", udp, 4)[0]]


def save(target, blob):
    d = here / "seeds" / target
    d.mkdir(parents=True, exist_ok=True)
    (d / hashlib.sha1(blob).hexdigest()[:16]).write_bytes(blob)


for target in ("tftp", "dhcp", "classify"):
    shutil.rmtree(here / "seeds" / target, ignore_errors=True)
for pcap in sorted(testdata.glob("*.pcap")):
    target = "dhcp" if pcap.name.startswith("dhcp") else "tftp"
    for f in frames(pcap):
        save("classify", f)
        save(target, udp_payload(f))
for target in ("tftp", "dhcp", "classify"):
    print(target, len(list((here / "seeds" / target).iterdir())), "seeds")
