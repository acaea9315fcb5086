#!/usr/bin/env python3
"""Readiness of a Kafka broker by a real request: exit 0 when a Metadata request (v4) on
HOST:PORT names at least MIN_BROKERS brokers (default 1) and an active controller, 1 otherwise.

    ready.py 127.0.0.1 19092 [timeout_seconds [min_brokers]]
"""
import socket
import struct
import sys


def read_exact(sock, n):
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("connection closed")
        buf += chunk
    return buf


def metadata(host, port, timeout):
    client = b"auditstream-ready"
    # Request header v1 (api_key 3 = Metadata, version 4, correlation id, client id), then the v4
    # body: all topics (null array), no auto-creation.
    body = struct.pack(">hhih", 3, 4, 1, len(client)) + client + struct.pack(">ib", -1, 0)
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.settimeout(timeout)
        sock.sendall(struct.pack(">i", len(body)) + body)
        (size,) = struct.unpack(">i", read_exact(sock, 4))
        resp = read_exact(sock, size)
    pos = 8  # correlation id, throttle time
    (brokers,) = struct.unpack_from(">i", resp, pos)
    pos += 4
    for _ in range(brokers):
        pos += 4  # node id
        (hlen,) = struct.unpack_from(">h", resp, pos)
        pos += 2 + hlen + 4  # host, port
        (rlen,) = struct.unpack_from(">h", resp, pos)
        pos += 2 + max(rlen, 0)  # rack
    (clen,) = struct.unpack_from(">h", resp, pos)
    pos += 2 + max(clen, 0)  # cluster id
    (controller,) = struct.unpack_from(">i", resp, pos)
    return brokers, controller


def main():
    host, port = sys.argv[1], int(sys.argv[2])
    timeout = float(sys.argv[3]) if len(sys.argv) > 3 else 2.0
    min_brokers = int(sys.argv[4]) if len(sys.argv) > 4 else 1
    try:
        brokers, controller = metadata(host, port, timeout)
    except (OSError, struct.error) as e:
        print(f"not ready: {e}", file=sys.stderr)
        return 1
    if brokers < min_brokers or controller < 0:
        print(f"not ready: {brokers} brokers, controller {controller}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
