#!/usr/bin/env python3
"""Writes a key table of N synthetic keys (random hashes; nobody holds the keys) for load-time
and memory measurements: python3 bench/gen_table.py 1000000 > /tmp/keys-1m.yaml"""
import os
import sys

n = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
out = sys.stdout
out.write("keys:\n")
chunk = []
for i in range(n):
    h = os.urandom(32).hex()
    clinics = f"[clinic_{i % 5000:05d}, clinic_{(i * 7) % 5000:05d}]"
    chunk.append(
        f"  - id: key_{i:08d}\n    hash: {h}\n    label: synthetic {i}\n    environment: live\n"
        f"    scopes: [interactions:read, metrics:read]\n    clinics: {clinics}\n"
    )
    if len(chunk) == 10000:
        out.write("".join(chunk))
        chunk = []
out.write("".join(chunk))
