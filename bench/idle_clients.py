#!/usr/bin/env python3
"""Open N keep-alive HTTP/1.1 connections, send one request on each, then hold them idle.

    idle_clients.py HOST PORT COUNT CONCURRENCY PATH READY_FILE HOLD_SECONDS

At most CONCURRENCY requests are in flight at a time, so the proxy's upstream pool stays
small and what grows is the per-client-connection state. When every connection has had
its answer, writes "READY <ok> <failed>" to READY_FILE, then idles for HOLD_SECONDS
(the caller measures and kills it). Standard library only.
"""
import asyncio
import os
import sys


async def one(host, port, path, sem, held, stats):
    async with sem:
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 10)
            writer.write(
                f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUser-Agent: idle-rss\r\n\r\n".encode()
            )
            await writer.drain()
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            status = int(head.split(b" ", 2)[1])
            length = None
            chunked = False
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value.strip())
                elif name.strip().lower() == b"transfer-encoding" and b"chunked" in value.lower():
                    chunked = True
            if length is not None:
                await asyncio.wait_for(reader.readexactly(length), 10)
            elif chunked:
                await asyncio.wait_for(reader.readuntil(b"0\r\n\r\n"), 10)
            if status == 200:
                stats["ok"] += 1
            else:
                stats["status_" + str(status)] = stats.get("status_" + str(status), 0) + 1
                stats["failed"] += 1
            held.append(writer)  # keep the connection open and idle
        except Exception as e:  # noqa: BLE001 - counted and reported, never fatal
            stats["failed"] += 1
            stats.setdefault("first_error", repr(e))


async def main():
    host, port, count, conc, path, ready, hold = sys.argv[1:8]
    sem = asyncio.Semaphore(int(conc))
    held, stats = [], {"ok": 0, "failed": 0}
    await asyncio.gather(*(one(host, int(port), path, sem, held, stats) for _ in range(int(count))))
    tmp = ready + ".tmp"
    with open(tmp, "w") as f:
        extra = " ".join(f"{k}={v}" for k, v in stats.items() if k not in ("ok", "failed"))
        f.write(f"READY {stats['ok']} {stats['failed']} {extra}\n")
    os.replace(tmp, ready)
    await asyncio.sleep(float(hold))
    for w in held:
        w.close()


if __name__ == "__main__":
    asyncio.run(main())
