#!/usr/bin/env python3
"""An independent λ client: written only from the wire format in DESIGN.md, sharing no code
with the project. The end-to-end tests use it to check that what the lambdas send back is what
the spec promises, as seen by an ordinary UDP socket of the receiving kernel.

usage: lambda_client.py HOST PORT LAMBDA_ID BODY COUNT [--timeout S]
prints one JSON object: {"sent", "answered", "ok", "bad", "statuses", "bodies", "errors"}
"""
import json
import os
import socket
import struct
import sys

MAGIC = 0x4C4E
VERSION = 1
FLAG_RESPONSE = 1
HEADER = struct.Struct(">HBBIQHHHH")  # magic version flags lambda_id request_id idx count status reserved


def main():
    args = sys.argv[1:]
    timeout = 1.0
    if "--timeout" in args:
        i = args.index("--timeout")
        timeout = float(args[i + 1])
        del args[i : i + 2]
    host, port, lambda_id, body, count = args
    port, lambda_id, count = int(port), int(lambda_id), int(count)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    sock.settimeout(timeout)
    body = body.encode()
    result = {"sent": 0, "answered": 0, "ok": 0, "bad": 0, "statuses": {}, "bodies": {}, "errors": []}
    base = int.from_bytes(os.urandom(6), "big") << 16
    for n in range(count):
        request_id = base + n
        sock.sendto(HEADER.pack(MAGIC, VERSION, 0, lambda_id, request_id, 0, 1, 0, 0) + body, (host, port))
        result["sent"] += 1
        while True:
            try:
                data, _ = sock.recvfrom(65535)
            except socket.timeout:
                result["errors"].append(f"request {n}: no answer within {timeout}s")
                break
            if len(data) < HEADER.size:
                result["bad"] += 1
                result["errors"].append(f"request {n}: {len(data)}-byte datagram")
                continue
            magic, version, flags, lid, rid, idx, cnt, status, reserved = HEADER.unpack_from(data)
            if rid != request_id:
                continue  # a late answer to an earlier request
            result["answered"] += 1
            problems = []
            if magic != MAGIC or version != VERSION:
                problems.append(f"magic/version {magic:#x}/{version}")
            if not flags & FLAG_RESPONSE:
                problems.append("RESPONSE flag not set")
            if lid != lambda_id or idx != 0 or cnt != 1:
                problems.append(f"ids changed: lambda {lid}, fragment {idx}/{cnt}")
            if problems:
                result["bad"] += 1
                result["errors"].append(f"request {n}: " + ", ".join(problems))
            else:
                result["ok"] += 1
            result["statuses"][str(status)] = result["statuses"].get(str(status), 0) + 1
            text = data[HEADER.size :].decode("utf-8", "replace")
            result["bodies"][text] = result["bodies"].get(text, 0) + 1
            break
    del result["errors"][20:]
    print(json.dumps(result))


if __name__ == "__main__":
    main()
