#!/usr/bin/env python3
"""A TCP proxy that counts the bytes each way (TCP payload: the TLS records
the agent and the collector write), for bench/wire.sh.

wire_proxy.py LISTEN_PORT TARGET_HOST TARGET_PORT STATS_FILE
Every 0.2 s it rewrites STATS_FILE with {"up": bytes agent->collector,
"down": bytes collector->agent, "up_writes": reads that carried data upward,
"connections": accepted connections}.
"""
import asyncio
import json
import os
import sys

stats = {"up": 0, "down": 0, "up_writes": 0, "connections": 0}


async def pump(reader, writer, key):
    try:
        while True:
            data = await reader.read(65536)
            if not data:
                break
            stats[key] += len(data)
            if key == "up":
                stats["up_writes"] += 1
            writer.write(data)
            await writer.drain()
    except (ConnectionError, asyncio.IncompleteReadError):
        pass
    finally:
        try:
            writer.close()
        except Exception:
            pass


async def handle(reader, writer, host, port):
    stats["connections"] += 1
    try:
        r2, w2 = await asyncio.open_connection(host, port)
    except OSError:
        writer.close()
        return
    await asyncio.gather(pump(reader, w2, "up"), pump(r2, writer, "down"))


async def dump(path):
    while True:
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(stats, f)
        os.replace(tmp, path)
        await asyncio.sleep(0.2)


async def main():
    listen, host, port, path = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), sys.argv[4]
    server = await asyncio.start_server(lambda r, w: handle(r, w, host, port), "127.0.0.1", listen)
    async with server:
        await asyncio.gather(server.serve_forever(), dump(path))


asyncio.run(main())
