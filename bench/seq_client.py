#!/usr/bin/env python3
"""A fixed number of GETs, one at a time, on one keep-alive connection, rotating the keys of a
sample file: the same work for every request, so callgrind's count a request repeats (wrk's
concurrency batches a varying number of requests per wake-up, a few per cent of noise).
   seq_client.py HOST PORT PATH SAMPLE N   ->   prints "KG_RESULT requests=N non2xx=M"
"""
import http.client
import sys

host, port, path, sample, n = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], int(sys.argv[5])
keys = [line.strip() for line in open(sample) if line.strip()]
conn = http.client.HTTPConnection(host, port, timeout=60)
non2xx = 0
for i in range(n):
    conn.request("GET", path, headers={"Authorization": "Bearer " + keys[i % len(keys)]})
    resp = conn.getresponse()
    resp.read()
    if not 200 <= resp.status < 300:
        non2xx += 1
print(f"KG_RESULT requests={n} non2xx={non2xx}")
