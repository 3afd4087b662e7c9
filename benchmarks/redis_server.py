"""A throwaway redis-server for the benchmarks that need one and were given no --url."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time


def start_redis() -> tuple[subprocess.Popen, str]:
    """A redis-server on a free loopback port with no persistence, and its URL, once it answers."""
    binary = (
        "/usr/bin/redis-server" if os.path.exists("/usr/bin/redis-server") else shutil.which("redis-server")
    )
    if not binary:
        sys.exit("no redis-server: install it or pass --url")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
    )
    import redis

    client = redis.Redis(port=port)
    for _ in range(500):
        try:
            client.ping()
            break
        except redis.ConnectionError:
            time.sleep(0.02)
    return proc, f"redis://127.0.0.1:{port}/0"
