#!/usr/bin/env python3
"""The host side of the kernel nlm-fcntl check: a second NLM host.

While the guest holds an fcntl lock, this asks our lock manager, as another host, whether it
could take an exclusive lock on the same file (NLM4 TEST over TCP). The guest's kernel resolves
conflicts between its own processes locally, so only another host shows that the server itself
knows about the guest's lock.

    nlm_probe.py VOLUME PATH/IN/VOLUME   prints "DENIED exclusive=1 svid=N offset=O len=L" or
                                         "GRANTED" (or the NLM status number)

Talks to MOUNT (20048), NFS (2049) and NLM (32803) on 127.0.0.1.
"""
import socket
import struct
import sys

MOUNT, NFS, NLM = (100005, 20048), (100003, 2049), (100021, 32803)


def opaque(b):
    return struct.pack(">I", len(b)) + b + b"\0" * ((4 - len(b) % 4) % 4)


def recv_exactly(s, n):
    out = b""
    while len(out) < n:
        chunk = s.recv(n - len(out))
        if not chunk:
            raise SystemExit("connection closed")
        out += chunk
    return out


def call(service, vers, proc, args, xid=1):
    prog, port = service
    cred = struct.pack(">I", 0) + opaque(b"kt-host") + struct.pack(">III", 0, 0, 0)
    msg = struct.pack(">IIIIIII", xid, 0, 2, prog, vers, proc, 1) + opaque(cred)
    msg += struct.pack(">II", 0, 0) + args
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(struct.pack(">I", 0x80000000 | len(msg)) + msg)
        data = b""
        while True:
            (mark,) = struct.unpack(">I", recv_exactly(s, 4))
            data += recv_exactly(s, mark & 0x7FFFFFFF)
            if mark & 0x80000000:
                break
    _, _, reply_stat, _, verf_len = struct.unpack(">IIIII", data[:20])
    at = 20 + (verf_len + 3) // 4 * 4
    (accept_stat,) = struct.unpack(">I", data[at : at + 4])
    if reply_stat != 0 or accept_stat != 0:
        raise SystemExit(f"RPC {prog}/{proc} refused: {reply_stat}/{accept_stat}")
    return data[at + 4 :]


def take_opaque(b, at):
    (n,) = struct.unpack(">I", b[at : at + 4])
    return b[at + 4 : at + 4 + n], at + 4 + (n + 3) // 4 * 4


def main():
    volume, path = sys.argv[1], sys.argv[2]
    res = call(MOUNT, 3, 1, opaque(f"/export/{volume}".encode()))
    (status,) = struct.unpack(">I", res[:4])
    if status != 0:
        raise SystemExit(f"MNT failed: {status}")
    fh, _ = take_opaque(res, 4)
    for name in path.split("/"):
        res = call(NFS, 3, 3, opaque(fh) + opaque(name.encode()))
        (status,) = struct.unpack(">I", res[:4])
        if status != 0:
            raise SystemExit(f"LOOKUP {name} failed: {status}")
        fh, _ = take_opaque(res, 4)
    alock = opaque(b"kt-host") + opaque(fh) + opaque(b"probe") + struct.pack(">IQQ", 1, 0, 0)
    res = call(NLM, 4, 1, opaque(b"probe") + struct.pack(">I", 1) + alock)
    _, at = take_opaque(res, 0)
    (stat,) = struct.unpack(">I", res[at : at + 4])
    if stat == 0:
        print("GRANTED")
    elif stat == 1:
        exclusive, svid = struct.unpack(">II", res[at + 4 : at + 12])
        _, after = take_opaque(res, at + 12)
        offset, length = struct.unpack(">QQ", res[after : after + 16])
        print(f"DENIED exclusive={exclusive} svid={svid} offset={offset} len={length}")
    else:
        print(f"status {stat}")


if __name__ == "__main__":
    main()
