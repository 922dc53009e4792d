#!/usr/bin/env python3
"""Programs that stage TCP resets in the netlab namespaces (used by tests/pcap_live.rs).

Servers print "ready" on stdout once they listen. Clients exit 0 whatever the reset did.
Every wait is bounded; nothing here talks to anything but the lab's own addresses.
"""
import os
import random
import socket
import struct
import sys
import time


def listener(host, port, backlog=16):
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    s = socket.socket(family, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((host, port))
    s.listen(backlog)
    print("ready", flush=True)
    return s


def linger0(sock):
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


def serve(host, port, mode, arg):
    s = listener(host, port, backlog=2 if mode == "noaccept" else 16)
    s.settimeout(60)
    if mode == "noaccept":
        time.sleep(60)
        return
    while True:
        c, _ = s.accept()
        c.settimeout(30)
        if mode == "ok":
            c.recv(4096)
            c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
            c.close()
        elif mode == "linger0":
            # Read the request, send part of an answer, then abort.
            c.recv(4096)
            c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\npartial")
            time.sleep(0.2)
            linger0(c)
            c.close()
        elif mode == "slow":
            c.recv(4096)
            time.sleep(float(arg))
            try:
                c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                time.sleep(0.5)
                c.close()
            except OSError:
                pass
        elif mode == "keepalive":
            # Answer requests; close the connection after `arg` seconds of idleness.
            c.settimeout(float(arg))
            try:
                while c.recv(4096):
                    c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            except socket.timeout:
                pass
            c.close()
        elif mode == "echo":
            # Answer every request, never close first.
            try:
                while c.recv(4096):
                    c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            except OSError:
                pass
            c.close()


def connect(host, port, source_port=0):
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    c = socket.socket(family, socket.SOCK_STREAM)
    c.settimeout(10)
    if source_port:
        c.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        c.bind(("", source_port))
    c.connect((host, port))
    return c


def request(path):
    return ("GET /%s HTTP/1.1\r\nHost: lab\r\n\r\n" % path).encode()


def quietly(action):
    try:
        action()
    except OSError:
        pass


def client(host, port, mode, arg):
    if mode == "get":
        def go():
            c = connect(host, port)
            c.sendall(request(arg or "index"))
            while c.recv(4096):
                pass
            c.close()
        quietly(go)
    elif mode == "pause-get":
        # One request, a pause of `arg` seconds, a second request on the same connection.
        def go():
            c = connect(host, port)
            c.sendall(request("first"))
            c.recv(4096)
            time.sleep(float(arg))
            c.sendall(request("second"))
            while c.recv(4096):
                pass
        quietly(go)
    elif mode == "abort":
        # Send a request, then abort before the (slow) answer.
        def go():
            c = connect(host, port)
            c.sendall(request("slow"))
            time.sleep(float(arg))
            linger0(c)
            c.close()
        quietly(go)
    elif mode == "overflow":
        # The listener has backlog 2 and never accepts. Two ordinary connections (source ports
        # 40001-40002) fill its accept queue to the limit. The router drops the pure ACKs of
        # two more handshakes (source ports 40003-40004), so each completes only when its data
        # arrives: the first is still queued (3 > 2 is checked later), the second overflows.
        def go():
            held = [connect(host, port, 40001), connect(host, port, 40002)]
            time.sleep(0.2)
            c = connect(host, port, 40003)
            d = connect(host, port, 40004)
            time.sleep(0.2)
            c.sendall(request("first"))
            time.sleep(0.3)
            d.sendall(request("second"))
            time.sleep(0.5)
            quietly(lambda: d.recv(4096))
            for s in held + [c, d]:
                s.close()
        quietly(go)
    elif mode == "syn":
        quietly(lambda: connect(host, port).close())


def checksum(data):
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack("!%dH" % (len(data) // 2), data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def forge_rst(src, dst, sport, dport, seq, ack, ttl):
    """An IPv4 RST+ACK from src to dst, as an on-path injector would forge it."""
    tcp = struct.pack("!HHIIBBHHH", sport, dport, seq, ack, 5 << 4, 0x14, 0, 0, 0)
    pseudo = socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack("!BBH", 0, 6, len(tcp))
    tcp = tcp[:16] + struct.pack("!H", checksum(pseudo + tcp)) + tcp[18:]
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), random.randint(1, 65535), 0,
                     ttl, 6, 0, socket.inet_aton(src), socket.inet_aton(dst))
    ip = ip[:10] + struct.pack("!H", checksum(ip)) + ip[12:]
    return ip + tcp


def inject(interface, marker, seconds):
    """Sniff `interface` (AF_PACKET); for every client packet carrying `marker`, forge two RSTs
    from the server to the client (the second with a jumped sequence number), and let the
    packet itself go on to the server."""
    sniff = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0800))
    sniff.bind((interface, 0))
    sniff.settimeout(0.5)
    raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    print("ready", flush=True)
    deadline = time.time() + float(seconds)
    marker = marker.encode()
    while time.time() < deadline:
        try:
            frame, meta = sniff.recvfrom(65535)
        except socket.timeout:
            continue
        if meta[2] == socket.PACKET_OUTGOING:
            continue
        ip = frame[14:]
        if len(ip) < 40 or ip[9] != 6:
            continue
        ihl = (ip[0] & 15) * 4
        total = struct.unpack("!H", ip[2:4])[0]
        tcp = ip[ihl:total]
        sport, dport, seq, ack = struct.unpack("!HHII", tcp[:12])
        payload = tcp[(tcp[12] >> 4) * 4:]
        if marker not in payload:
            continue
        src, dst = socket.inet_ntoa(ip[12:16]), socket.inet_ntoa(ip[16:20])
        for extra in (0, 1460):
            rst = forge_rst(dst, src, dport, sport, ack + extra, seq + len(payload), 64)
            raw.sendto(rst, (src, 0))


def main():
    role = sys.argv[1]
    if role == "serve":
        serve(sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5] if len(sys.argv) > 5 else "")
    elif role == "client":
        client(sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5] if len(sys.argv) > 5 else "")
    elif role == "inject":
        inject(sys.argv[2], sys.argv[3], sys.argv[4])
    else:
        sys.exit("unknown role %r" % role)


if __name__ == "__main__":
    main()
