#!/usr/bin/env bash
# Regenerates the pcaps in this folder from real programs talking inside two
# network namespaces joined by a veth pair (10.77.0.0/24, nothing leaves them).
#
#   sudo crates/wire/testdata/capture.sh
#
# Needs: iproute2 tcpdump dnsmasq tftpd-hpa tftp-hpa atftp curl busybox python3.
# Clients: tftp-hpa (no options), curl (tsize, blksize, timeout), atftp
# (blksize, tsize, timeout, windowsize), busybox udhcpc (DHCP with PXE options
# 60/93/94/97/77) and pxeclient.py (proxyDHCP + boot server discovery on 4011).
# Served files are a few KB of a fixed pattern, so the pcaps stay small; the
# timing fields (xid, ports, secs) differ from run to run, so the tests check
# fields that do not change and byte-exact re-emission.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
srv=bc-cap-srv cli=bc-cap-cli
srv_ip=10.77.0.1 cli_ip=10.77.0.2
cli_mac=02:77:00:00:00:02
work=$(mktemp -d)
pids=()

cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
    ip netns del "$srv" 2>/dev/null || true
    ip netns del "$cli" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

S() { ip netns exec "$srv" "$@"; }
C() { ip netns exec "$cli" "$@"; }

ip netns del "$srv" 2>/dev/null || true
ip netns del "$cli" 2>/dev/null || true
ip netns add "$srv"
ip netns add "$cli"
ip link add bcs0 netns "$srv" type veth peer name bcc0 netns "$cli"
S ip link set lo up
C ip link set lo up
S ip addr add "$srv_ip/24" dev bcs0
S ip link set bcs0 up
C ip link set bcc0 address "$cli_mac"
C ip addr add "$cli_ip/24" dev bcc0
C ip link set bcc0 up
# A default route so that the PXE client can broadcast to 255.255.255.255.
C ip route add default via "$srv_ip" dev bcc0

# The served files: a pattern that is not all one byte, 3000 bytes = 5 full
# 512-byte blocks and a short one.
mkdir -p "$work/root" "$work/upload"
python3 -c 'import sys; sys.stdout.buffer.write(bytes((i * 7 + 3) % 251 for i in range(3000)))' \
    > "$work/root/pxelinux.0"
cp "$work/root/pxelinux.0" "$work/upload/kernel"
chmod 777 "$work/upload"

# start NAME CMD...: runs CMD in the server namespace in the background.
# (`ip netns exec` is run directly, not through S, so that $! is the program.)
start() { ip netns exec "$srv" "$@" >"$work/$(basename "$1").log" 2>&1 & pids+=($!); sleep 0.5; }
stop_last() { local p=${pids[-1]}; kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; unset 'pids[-1]'; }

# capture FILE CMD...: runs CMD (in the client namespace) under tcpdump.
capture() {
    local out=$1; shift
    ip netns exec "$srv" tcpdump -i bcs0 --immediate-mode -U -Z root -s 0 -w "$here/$out" udp >/dev/null 2>&1 &
    local t=$!
    sleep 1
    C "$@" || echo "  ($out: client exited $?)"
    sleep 0.5
    kill "$t"; wait "$t" 2>/dev/null || true
    [ -s "$here/$out" ] || { echo "$out: nothing captured" >&2; exit 1; }
    echo "$out: $(tcpdump -r "$here/$out" 2>/dev/null | wc -l) packets"
}

# --- TFTP from tftpd-hpa --------------------------------------------------
start in.tftpd -L -u root -c -s "$work/root" -a "$srv_ip:69"
capture tftp-hpa-plain.pcap tftp -4 -m binary "$srv_ip" -c get pxelinux.0 "$work/out1"
capture tftp-hpa-curl-blksize.pcap curl -sS --tftp-blksize 1024 -o "$work/out2" "tftp://$srv_ip/pxelinux.0"
capture tftp-hpa-atftp-options.pcap atftp --option "blksize 1428" --option "tsize 0" \
    --option "timeout 3" --option "windowsize 4" -g -r pxelinux.0 -l "$work/out3" "$srv_ip"
capture tftp-hpa-notfound.pcap tftp -4 -m binary "$srv_ip" -c get missing.img "$work/out4"
capture tftp-hpa-wrq.pcap tftp -4 -m binary "$srv_ip" -c put "$work/upload/kernel" kernel
stop_last

# --- TFTP from dnsmasq ------------------------------------------------------
start dnsmasq -d --user=root --port=0 --conf-file=/dev/null --pid-file= \
    --interface=bcs0 --bind-interfaces --enable-tftp --tftp-root="$work/root"
capture dnsmasq-tftp-plain.pcap tftp -4 -m netascii "$srv_ip" -c get pxelinux.0 "$work/out5"
capture dnsmasq-tftp-curl-blksize.pcap curl -sS --tftp-blksize 1432 -o "$work/out6" "tftp://$srv_ip/pxelinux.0"
capture dnsmasq-tftp-atftp-options.pcap atftp --option "blksize 512" --option "tsize 0" \
    --option "timeout 2" --option "windowsize 4" -g -r pxelinux.0 -l "$work/out7" "$srv_ip"
stop_last

# --- DHCP with PXE options: dnsmasq as the DHCP server, busybox udhcpc client --
start dnsmasq -d --user=root --port=0 --conf-file=/dev/null --pid-file= \
    --interface=bcs0 --bind-interfaces --no-ping --log-dhcp \
    --dhcp-leasefile="$work/leases" \
    --dhcp-range=10.77.0.100,10.77.0.150,255.255.255.0,1h \
    --dhcp-boot=pxelinux.0,bootsrv,"$srv_ip" \
    --dhcp-option=66,"$srv_ip" \
    --pxe-prompt="Press F8 for menu",5 \
    --pxe-service=x86PC,"Boot from network",pxelinux \
    --pxe-service=x86PC,"Boot from local disk"
capture dhcp-pxe.pcap busybox udhcpc -f -q -n -t 3 -T 1 -i bcc0 -s /bin/true \
    -V PXEClient:Arch:00000:UNDI:002001 -x 0x5d:0000 -x 0x5e:010201 \
    -x 0x61:00101112131415161718191a1b1c1d1e1f -x 0x4d:69505845 \
    -O 43 -O 66 -O 67
stop_last

# --- Option overload (52): more options than fit in the client's 576 bytes ----
long=$(printf 'x%.0s' $(seq 1 200))
start dnsmasq -d --user=root --port=0 --conf-file=/dev/null --pid-file= \
    --interface=bcs0 --bind-interfaces --no-ping --log-dhcp \
    --dhcp-leasefile="$work/leases2" \
    --dhcp-range=10.77.0.100,10.77.0.150,255.255.255.0,1h \
    --dhcp-option-force=224,"a${long:0:199}" --dhcp-option-force=225,"b${long:0:99}" \
    --dhcp-option-force=226,"c${long:0:69}" --dhcp-option-force=227,"d${long:0:39}"
capture dhcp-overload.pcap busybox udhcpc -f -q -n -t 3 -T 1 -i bcc0 -s /bin/true \
    -V PXEClient:Arch:00007:UNDI:003016 -x 0x5d:0007
stop_last

# --- proxyDHCP and boot server discovery on UDP 4011 -----------------------------
start dnsmasq -d --user=root --port=0 --conf-file=/dev/null --pid-file= \
    --interface=bcs0 --bind-interfaces --log-dhcp \
    --dhcp-range=10.77.0.0,proxy \
    --pxe-prompt="Press F8 for menu",5 \
    --pxe-service=x86PC,"Boot from network",pxelinux \
    --pxe-service=x86PC,"Boot from local disk" \
    --pxe-service=x86-64_EFI,"UEFI network boot",bootx64
capture dhcp-proxy-4011.pcap python3 "$here/pxeclient.py" "$srv_ip" "$cli_ip" "$cli_mac"
stop_last

# The fuzz seeds come from these captures.
python3 "$here/../../../fuzz/extract-seeds.py"
