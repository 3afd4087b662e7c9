"""`crm-connector serve` under load: hooks accepted per second, and change-to-card latency.

    python -m benchmarks.bench_hooks [--portals 10] [--changes 1000] [--seconds 10]
        [--engine celery|local] [--client auto|wrk|python] [--connections 32] [--rate 500]
        [--worker-threads 10] [--size 600] [--debounce 1] [--redis redis://...]

Sets up `--portals` sandbox portals with their rate limits on (even ones amoCRM, odd ones
Bitrix24 with an outgoing webhook; `--amo-only` for amoCRM alone), one config with a source
per portal, each with its `webhook_secret`, then, as real processes: a Redis (`--redis`,
else $CRM_TEST_REDIS_URL, else a redis-server started here; celery engine only), one worker
(`crm-connector worker -c --worker-threads`), the first sync of every portal (`run --once`),
`serve` and `hooks install` of the amoCRM sources. Then:

(a) hooks/s: `--connections` keep-alive clients post genuine deliveries (an amoCRM
    `update_lead` form, a Bitrix24 ONCRMDEALUPDATE from the outgoing webhook, cycling over
    every portal and 20 deals of each) to `serve` for `--seconds`, through `wrk` when it is
    installed (`apt-get install wrk`), else Python threads on http.client, as fast as they
    get answers (closed loop): the most hooks accepted per second, and the latency at that
    rate. Then the same deliveries at a steady `--rate` (500/s), open loop, from
    `--paced-connections` keep-alive connections of one asyncio client process, each latency counted from when its request
    was due: the goal is >= 500/s with p95 < 50 ms. The refreshes the hooks cause run behind
    meanwhile; then how long those took to drain.
(b) change-to-card latency: a burst of `--changes` edits across the portals (an open deal of
    one contact won, in the sandbox's dataset, as a manager would), each timed from the edit
    until the contact's 'KPI: Deals won' in that sandbox counts it (the sandboxes are polled in
    memory every 20 ms). Prints p50 / p95 / max, how many the deadline left undone, the API
    requests the refreshes made (reads and writes) and any rate-limit answers.

Everything talks to 127.0.0.1 only; every loop is bounded in time.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from urllib.parse import urlencode, urlsplit, urlunsplit

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from adapters.bitrix24 import events as b24_events  # noqa: E402
from sandbox.amocrm import AmoSandbox  # noqa: E402
from sandbox.bitrix24 import Bitrix24Sandbox  # noqa: E402
from sandbox.bitrix24.auth import MEMBER_ID  # noqa: E402
from sandbox.bitrix24.events import event_data, pairs_of  # noqa: E402

CONNECTOR = [sys.executable, "-m", "connector"]
WON = "KPI: Deals won"
FIELDS = {"deals_won": WON, "revenue_won": "KPI: Lifetime revenue"}
FORM = "application/x-www-form-urlencoded"
REDIS_DB = 14
ENV = dict(os.environ, PYTHONPATH=ROOT)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    k = (len(values) - 1) * p / 100
    lo, hi = int(k), min(int(k) + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (k - lo)


def wait_for(pred, what: str, deadline_s: float, procs=()):
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        value = pred()
        if value:
            return value
        for name, p in procs:
            if p.poll() is not None:
                sys.exit(f"{name} exited (rc {p.returncode}) while waiting for {what}")
        time.sleep(0.05)
    sys.exit(f"timed out after {deadline_s:g}s waiting for {what}")


def log_lines(path) -> list[dict]:
    out = []
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
    return out


# ---- the portals ------------------------------------------------------------------------------


class Portal:
    def __init__(self, i: int, crm: str, size: int):
        self.i, self.crm = i, crm
        self.name = f"bench-{crm}-{i}"
        self.secret = secrets.token_urlsafe(32)
        seed = 100 + i
        self.srv = (
            AmoSandbox(size=size, seed=seed, limits=True)
            if crm == "amo"
            else Bitrix24Sandbox(size=size, seed=seed, limits=True)
        ).start()
        self.token = None
        self.b24_kinds: list[str] = []  # Bitrix24: "read" / "write" per HTTP request
        if crm == "b24":
            self._count_b24_calls()

    def _count_b24_calls(self) -> None:
        """Tell a Bitrix24 request that writes (a method, or a batch holding one, that adds,
        updates, deletes or sets) from one that only reads: the request log has no bodies."""
        from sandbox.bitrix24.params import parse_body

        handle = self.srv.handle

        def counted(req):
            methods = [req.path.rsplit("/", 1)[-1]]
            if methods[0] == "batch":
                try:
                    cmd = parse_body(req.headers.get("content-type", ""), req.body).get("cmd") or {}
                except ValueError:
                    cmd = {}
                methods = [str(v).split("?", 1)[0] for v in (cmd.values() if isinstance(cmd, dict) else cmd)]
            write = any(re.search(r"\.(update|add|delete|set)$", m) for m in methods)
            self.b24_kinds.append("write" if write else "read")
            return handle(req)

        self.srv.handle = counted

    @property
    def ds(self):
        return self.srv.dataset

    def hook_path(self) -> str:
        return f"/hooks/{self.name}/{self.secret}"

    def source_toml(self) -> str:
        common = f'name = "{self.name}"\nwebhook_secret = "{self.secret}"\n'
        if self.crm == "amo":
            return (
                f'[[sources]]\n{common}kind = "amocrm"\nbase_url = "{self.srv.url}"\n'
                f'access_token = "{self.srv.access_token}"\n'
            )
        return (
            f'[[sources]]\n{common}kind = "bitrix24"\nwebhook_url = "{self.srv.webhook_url}"\n'
            f'application_token = "{self.token}"\n'
        )

    def body(self, deal_id: int) -> str:
        """A genuine delivery naming this deal, as the CRM would post it."""
        if self.crm == "amo":
            return urlencode(self.srv.hook_pairs("update_lead", deal_id))
        pairs = [
            ("event", "ONCRMDEALUPDATE"),
            *pairs_of("data", event_data("deals", "UPDATE", deal_id)),
            ("ts", str(int(time.time()))),
            ("auth[domain]", f"{self.srv.host}:{self.srv.port}"),
            ("auth[member_id]", MEMBER_ID),
            ("auth[application_token]", self.token),
        ]
        return urlencode(pairs)

    def card(self, contact_id: int):
        ds = self.ds
        fid = next((f["id"] for f in ds.fields["contact"] if f["name"] == WON), None)
        if fid is None:
            return None
        return ds.by_id("contacts")[contact_id]["custom"].get(fid)

    def won_stage(self, deal) -> int:
        pipeline = next(p for p in self.ds.pipelines if p["id"] == deal["pipeline_id"])
        return next(s["id"] for s in pipeline["stages"] if s["semantics"] == "won")

    def limit_answers(self) -> int:
        if self.crm == "amo":
            return sum(1 for r in list(self.srv.request_log) if r["status"] == 429)
        return self.srv.limit_errors

    def requests(self) -> tuple[int, int]:
        """(reads, writes) this portal has answered so far."""
        log = list(self.srv.request_log)
        if self.crm == "amo":
            reads = sum(1 for r in log if r["method"] == "GET")
            return reads, len(log) - reads
        kinds = list(self.b24_kinds)
        writes = kinds.count("write")
        return len(kinds) - writes, writes

    def stop(self):
        self.srv.stop()


# ---- the processes ----------------------------------------------------------------------------


class Procs:
    def __init__(self, tmp: str):
        self.tmp, self.running = tmp, []

    def start(self, name: str, args: list[str]):
        log = os.path.join(self.tmp, f"{name}.log")
        err = open(log, "w")
        p = subprocess.Popen(args, env=ENV, stdout=subprocess.DEVNULL, stderr=err, text=True)
        self.running.append((name, p, err))
        return p, log

    def stop(self):
        for _name, p, err in reversed(self.running):
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(60)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
            err.close()


def start_redis(procs: Procs) -> str:
    binary = (
        "/usr/bin/redis-server" if os.path.exists("/usr/bin/redis-server") else shutil.which("redis-server")
    )
    if not binary:
        sys.exit("no redis-server: apt-get install redis-server, or pass --redis")
    port = free_port()
    p, _ = procs.start(
        "redis",
        [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--loglevel",
            "warning",
        ],
    )
    import redis

    client = redis.Redis(port=port)
    wait_for(lambda: _pings(client), "redis-server", 10, [("redis", p)])
    return f"redis://127.0.0.1:{port}/0"


def _pings(client) -> bool:
    import redis

    try:
        return client.ping()
    except redis.ConnectionError:
        return False


def with_db(url: str, db: int) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{db}", parts.query, parts.fragment))


def cli(config: str, *args) -> str:
    out = subprocess.run(
        CONNECTOR + ["--config", config, *args], capture_output=True, text=True, timeout=900, env=ENV
    )
    if out.returncode != 0:
        sys.exit(f"crm-connector {' '.join(args)} failed (rc {out.returncode}):\n{out.stderr[-3000:]}")
    return out.stdout


def up(base: str) -> bool:
    try:
        conn = http.client.HTTPConnection("127.0.0.1", int(base.rsplit(":", 1)[1]), timeout=1)
        conn.request("GET", "/health")
        return conn.getresponse().status == 200
    except OSError:
        return False


# ---- (a) hooks per second ---------------------------------------------------------------------

WRK_LUA = """
local reqs = {}
local bodies = {
%s
}
local i = 0
local thread_no = 0
local counter = 0

setup = function(thread)
  thread:set("thread_no", counter)
  counter = counter + 1
end

init = function(args)
  for _, pb in ipairs(bodies) do
    reqs[#reqs + 1] = wrk.format("POST", pb[1], {["Content-Type"] = "%s"}, pb[2])
  end
  i = (tonumber(thread_no) or 0) * 7
end

request = function()
  i = i %% #reqs + 1
  return reqs[i]
end

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("RESULT requests=%%d duration_us=%%d non2xx=%%d connect=%%d read=%%d write=%%d " ..
      "timeout=%%d p50_us=%%d p95_us=%%d p99_us=%%d max_us=%%d\\n", summary.requests, summary.duration,
      e.status, e.connect, e.read, e.write, e.timeout, latency:percentile(50), latency:percentile(95),
      latency:percentile(99), latency.max))
end
"""


def run_wrk(port: int, reqs: list[tuple[str, str]], seconds: float, connections: int, tmp: str) -> dict:
    rows = ",\n".join(f"  {{[==[{path}]==], [==[{body}]==]}}" for path, body in reqs)
    script = os.path.join(tmp, "hooks.lua")
    with open(script, "w") as f:
        f.write(WRK_LUA % (rows, FORM))
    threads = min(2, connections)
    out = subprocess.run(
        [
            "wrk",
            "-t",
            str(threads),
            "-c",
            str(connections),
            "-d",
            f"{seconds:g}s",
            "--timeout",
            "5s",
            "-s",
            script,
            f"http://127.0.0.1:{port}",
        ],
        capture_output=True,
        text=True,
        timeout=seconds + 60,
    )
    line = next((x for x in out.stdout.splitlines() if x.startswith("RESULT ")), None)
    if line is None:
        sys.exit(f"wrk printed no result:\n{out.stdout}\n{out.stderr}")
    r = {k: int(v) for k, v in (kv.split("=") for kv in line.split()[1:])}
    ok = r["requests"] - r["non2xx"]
    return {
        "client": f"wrk -t{threads} -c{connections}",
        "requests": r["requests"],
        "ok": ok,
        "seconds": r["duration_us"] / 1e6,
        "non2xx": r["non2xx"],
        "errors": r["connect"] + r["read"] + r["write"] + r["timeout"],
        "p50": r["p50_us"] / 1000,
        "p95": r["p95_us"] / 1000,
        "p99": r["p99_us"] / 1000,
        "max": r["max_us"] / 1000,
        "latency_of": "every answer (wrk)",
    }


def run_python(port: int, reqs: list[tuple[str, str]], seconds: float, connections: int) -> dict:
    lat, statuses, errors, lock = [], {}, [0], threading.Lock()
    start = threading.Barrier(connections + 1)
    end_at = [0.0]

    def client(k: int):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        mine, codes, n = [], {}, k * 7
        start.wait()
        while time.monotonic() < end_at[0]:
            path, body = reqs[n % len(reqs)]
            n += 1
            t0 = time.perf_counter()
            try:
                conn.request("POST", path, body=body, headers={"Content-Type": FORM})
                resp = conn.getresponse()
                resp.read()
            except OSError:
                with lock:
                    errors[0] += 1
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                continue
            dt = time.perf_counter() - t0
            codes[resp.status] = codes.get(resp.status, 0) + 1
            if 200 <= resp.status < 300:
                mine.append(dt * 1000)
        conn.close()
        with lock:
            lat.extend(mine)
            for c, v in codes.items():
                statuses[c] = statuses.get(c, 0) + v

    threads = [threading.Thread(target=client, args=(k,), daemon=True) for k in range(connections)]
    for t in threads:
        t.start()
    end_at[0] = time.monotonic() + seconds
    t0 = time.monotonic()
    start.wait()
    for t in threads:
        t.join(seconds + 30)
    took = time.monotonic() - t0
    total = sum(statuses.values())
    ok = sum(v for c, v in statuses.items() if 200 <= c < 300)
    return {
        "client": f"python http.client x{connections}",
        "requests": total,
        "ok": ok,
        "seconds": took,
        "non2xx": total - ok,
        "errors": errors[0],
        "p50": pct(lat, 50),
        "p95": pct(lat, 95),
        "p99": pct(lat, 99),
        "max": max(lat, default=float("nan")),
        "latency_of": "2xx answers",
    }


def run_paced(port: int, reqs: list[tuple[str, str]], seconds: float, rate: float, connections: int) -> dict:
    """Open loop: request j is due at start + j / rate, sent on keep-alive connection
    j % connections; its latency runs from when it was due (a connection held up by a slow
    answer sends late, and that wait counts: no coordinated omission). The client is a process
    of its own with one asyncio loop, so neither the sandboxes' threads nor its own compete
    with it for a GIL."""
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    proc = ctx.Process(target=_paced_process, args=(port, reqs, seconds, rate, connections, out))
    proc.start()
    try:
        r = out.get(timeout=seconds + 120)
    finally:
        proc.join(30)
        if proc.is_alive():
            proc.kill()
    lat = r.pop("lat")
    return {
        **r,
        "p50": pct(lat, 50),
        "p95": pct(lat, 95),
        "p99": pct(lat, 99),
        "max": max(lat, default=float("nan")),
    }


def _paced_process(port, reqs, seconds, rate, connections, out) -> None:
    import asyncio

    raw = [
        (
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: {FORM}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n{body}"
        ).encode()
        for path, body in reqs
    ]
    total = int(rate * seconds)
    lat, codes, errors = [], {}, [0]

    async def connection(k: int, t0: float):
        loop = asyncio.get_running_loop()
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        for j in range(k, total, connections):
            due = t0 + j / rate
            if due > loop.time():
                await asyncio.sleep(due - loop.time())
            try:
                writer.write(raw[j % len(raw)])
                head = await reader.readuntil(b"\r\n\r\n")
                status = int(head.split(b" ", 2)[1])
                size = int(re.search(rb"(?i)content-length:\s*(\d+)", head).group(1))
                await reader.readexactly(size)
            except (OSError, asyncio.IncompleteReadError, AttributeError, ValueError):
                errors[0] += 1
                writer.close()
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                continue
            codes[status] = codes.get(status, 0) + 1
            if 200 <= status < 300:
                lat.append((loop.time() - due) * 1000)
        writer.close()

    async def main():
        t0 = asyncio.get_running_loop().time() + 0.2
        t = time.perf_counter()
        await asyncio.gather(*(connection(k, t0) for k in range(connections)))
        return time.perf_counter() - t - 0.2

    took = asyncio.run(main())
    ok = sum(v for c, v in codes.items() if 200 <= c < 300)
    out.put(
        {
            "requests": sum(codes.values()),
            "ok": ok,
            "seconds": took,
            "errors": errors[0],
            "non2xx": sum(codes.values()) - ok,
            "lat": lat,
        }
    )


def quiet(portals: list[Portal], idle_s: float, deadline_s: float) -> float:
    """Wait until no portal has answered a request for `idle_s`; how long it took."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < deadline_s:
        last = max((p.srv.request_log[-1]["at"] for p in portals if p.srv.request_log), default=0)
        if time.time() - last >= idle_s and all(_idle_deliveries(p) for p in portals):
            return time.monotonic() - t0
        time.sleep(0.2)
    return float("nan")


def _idle_deliveries(p: Portal) -> bool:
    if p.crm == "amo":
        return p.srv.deliverer.wait(0)
    return p.srv.deliveries.wait_idle(0)


# ---- (b) change-to-card latency ---------------------------------------------------------------


def pick_changes(portals: list[Portal], n: int) -> list[tuple[Portal, dict, int]]:
    """`n` open deals of one contact, spread evenly over the portals, distinct contacts first."""
    per = {}
    for p in portals:
        contacts = p.ds.by_id("contacts")
        deals = [
            d
            for d in p.ds.deals
            if d["status"] == "open"
            and not d["is_deleted"]
            and len(d["contact_ids"]) == 1
            and not contacts[d["contact_ids"][0]]["is_deleted"]
        ]
        seen, first, rest = set(), [], []
        for d in deals:
            (first if d["contact_ids"][0] not in seen else rest).append(d)
            seen.add(d["contact_ids"][0])
        per[p.name] = first + rest
    out, k = [], 0
    while len(out) < n:
        progressed = False
        for p in portals:
            if len(out) >= n:
                break
            if k < len(per[p.name]):
                d = per[p.name][k]
                out.append((p, d, d["contact_ids"][0]))
                progressed = True
        if not progressed:
            sys.exit(f"the portals have only {len(out)} open deals of one contact: raise --size")
        k += 1
    return out


def burst(portals: list[Portal], n: int, deadline_s: float) -> dict:
    changes = pick_changes(portals, n)
    before = {(p.name, c): float(p.card(c) or 0) for p, _, c in changes}
    rank, wanted = {}, []
    for p, _, c in changes:  # the k-th win of a contact shows as before + k
        rank[(p.name, c)] = rank.get((p.name, c), 0) + 1
        wanted.append(before[(p.name, c)] + rank[(p.name, c)])
    reqs0 = {p.name: p.requests() for p in portals}
    limits0 = {p.name: p.limit_answers() for p in portals}
    hooks0 = sum(len(_sent(p)) for p in portals)
    edited = [0.0] * len(changes)
    t_start = time.monotonic()
    for i, (p, d, _) in enumerate(changes):
        edited[i] = time.monotonic()
        p.ds.update("deals", d["id"], stage_id=p.won_stage(d))
    edits_s = time.monotonic() - t_start
    seen = [None] * len(changes)
    left = set(range(len(changes)))
    end = t_start + deadline_s
    while left and time.monotonic() < end:
        now = time.monotonic()
        for i in list(left):
            p, _, c = changes[i]
            if float(p.card(c) or 0) >= wanted[i]:
                seen[i] = now - edited[i]
                left.discard(i)
        time.sleep(0.02)
    all_s = time.monotonic() - t_start
    lat = [s for s in seen if s is not None]
    per_crm = {}
    for (p, _, _), s_ in zip(changes, seen):
        if s_ is not None:
            per_crm.setdefault(p.crm, []).append(s_)
    settle = quiet(portals, 2.0, 60)
    reads = writes = 0
    by_crm = {}
    for p in portals:
        r, w = p.requests()
        r0, w0 = reqs0[p.name]
        reads, writes = reads + r - r0, writes + w - w0
        agg = by_crm.setdefault(p.crm, [0, 0])
        agg[0] += r - r0
        agg[1] += w - w0
    undone = [
        f"{changes[i][0].name} deal {changes[i][1]['id']} contact {changes[i][2]}: "
        f"card {changes[i][0].card(changes[i][2])!r}, wanted {wanted[i]:g}"
        for i in sorted(left)
    ]
    return {
        "per_crm": {k: (len(v), pct(v, 50), pct(v, 95)) for k, v in per_crm.items()},
        "undone": undone,
        "changes": len(changes),
        "edits_s": edits_s,
        "done": len(lat),
        "all_s": all_s,
        "p50": pct(lat, 50),
        "p95": pct(lat, 95),
        "max": max(lat, default=float("nan")),
        "reads": reads,
        "writes": writes,
        "by_crm": by_crm,
        "settle_s": settle,
        "hooks": sum(len(_sent(p)) for p in portals) - hooks0,
        "limit_answers": sum(p.limit_answers() - limits0[p.name] for p in portals),
        "contacts": len(rank),
    }


def _sent(p: Portal) -> list:
    return p.srv.deliverer.sent if p.crm == "amo" else p.srv.deliveries.sent


# ---- main -------------------------------------------------------------------------------------


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--portals", type=int, default=10)
    ap.add_argument("--changes", type=int, default=1000)
    ap.add_argument("--seconds", type=float, default=10.0, help="how long (a) posts hooks")
    ap.add_argument("--engine", choices=("celery", "local"), default="celery")
    ap.add_argument("--client", choices=("auto", "wrk", "python"), default="auto")
    ap.add_argument("--connections", type=int, default=32, help="concurrent keep-alive clients in (a)")
    ap.add_argument(
        "--rate",
        type=float,
        default=500.0,
        help="(a) again at this steady rate, open loop, for its latency (0: skip)",
    )
    ap.add_argument("--paced-connections", type=int, default=16, help="keep-alive clients of the steady rate")
    ap.add_argument("--worker-threads", type=int, default=10, help="the worker's -c (celery engine)")
    ap.add_argument("--serve-threads", type=int, default=None, help="serve's --threads (default: its own)")
    ap.add_argument("--size", type=int, default=600, help="each sandbox dataset's size (deals)")
    ap.add_argument("--debounce", type=float, default=1.0, help="[webhooks] debounce_s")
    ap.add_argument("--deadline", type=float, default=120.0, help="how long (b) waits for the cards")
    ap.add_argument("--amo-only", action="store_true", help="amoCRM portals only")
    ap.add_argument(
        "--redis", default=None, help="Redis URL (default: $CRM_TEST_REDIS_URL, else one started here)"
    )
    ap.add_argument("--skip", choices=("a", "b"), default=None, help="skip one part")
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder (logs)")
    args = ap.parse_args()

    client = args.client
    if client == "auto":
        client = "wrk" if shutil.which("wrk") else "python"
    elif client == "wrk" and not shutil.which("wrk"):
        sys.exit("no wrk: apt-get install wrk, or --client python")
    tmp = tempfile.mkdtemp(prefix="bench-hooks-")
    procs = Procs(tmp)
    portals: list[Portal] = []
    try:
        _run(args, client, tmp, procs, portals)
    finally:
        procs.stop()
        for p in portals:
            p.stop()
        if args.keep:
            print(f"logs kept in {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


def _run(args, client: str, tmp: str, procs: Procs, portals: list[Portal]) -> None:
    t0 = time.monotonic()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    for i in range(args.portals):
        portals.append(Portal(i, "amo" if args.amo_only or i % 2 == 0 else "b24", args.size))
    for p in portals:
        if p.crm == "b24":
            p.token = p.srv.add_outgoing_webhook(base + p.hook_path(), b24_events.BOUND)
    broker = None
    if args.engine == "celery":
        import redis

        url = args.redis or os.environ.get("CRM_TEST_REDIS_URL") or start_redis(procs)
        broker = with_db(url, REDIS_DB)
        redis.Redis.from_url(broker).flushdb()
    config = os.path.join(tmp, "config.toml")
    engine = f'[engine]\nkind = "celery"\nbroker_url = "{broker}"\n\n' if broker else ""
    fields = "\n".join(f'{k} = "{v}"' for k, v in FIELDS.items())
    with open(config, "w") as f:
        f.write(f"""{engine}[storage]
path = "{os.path.join(tmp, "{source}.db")}"

{chr(10).join(p.source_toml() for p in portals)}
[webhooks]
listen = "127.0.0.1:{port}"
public_url = "{base}"
debounce_s = {args.debounce}

[kpi]
targets = ["contact", "company"]

[kpi.fields]
{fields}
""")
    crms = {c: sum(p.crm == c for p in portals) for c in ("amo", "b24")}
    print(
        f"bench_hooks: {args.portals} portals ({crms['amo']} amoCRM, {crms['b24']} Bitrix24; "
        f"{args.size} deals each, rate limits on), engine {args.engine}, debounce {args.debounce:g} s, "
        f"{os.cpu_count()} cores"
    )
    watch = []
    if args.engine == "celery":
        worker, worker_log = procs.start(
            "worker",
            CONNECTOR
            + ["--config", config, "--log-format", "json", "worker", "-c", str(args.worker_threads)],
        )
        watch.append(("worker", worker))
        wait_for(
            lambda: any("ready" in d.get("msg", "") for d in log_lines(worker_log)), "the worker", 60, watch
        )
    t = time.monotonic()
    cli(config, "run", "--once")
    print(f"setup: first sync + KPIs of {args.portals} portals in {time.monotonic() - t:.1f} s")
    for p in portals:  # before serve starts its catch-up syncs
        if p.crm == "amo":
            cli(config, "hooks", "install", p.name)
    serve_args = ["--threads", str(args.serve_threads)] if args.serve_threads else []
    serve, serve_log = procs.start(
        "serve", CONNECTOR + ["--config", config, "--log-format", "json", "serve", *serve_args]
    )
    watch.append(("serve", serve))
    wait_for(lambda: up(base), "serve to listen", 60, watch)
    job_log = worker_log if args.engine == "celery" else serve_log

    def caught_up() -> bool:
        text = open(job_log, encoding="utf-8", errors="replace").read()
        return all(
            f"source={p.name} status=" in text or f'"source": "{p.name}"' in text and '"event": "job"' in text
            for p in portals
        )

    wait_for(caught_up, "serve's catch-up syncs", 300, watch)
    quiet(portals, 1.0, 60)
    print(
        f"setup: hooks installed, serve listening, catch-up syncs done ({time.monotonic() - t0:.1f} s in all)"
    )

    if args.skip != "a":
        each = [
            [(p.hook_path(), p.body(d["id"])) for d in p.ds.deals if not d["is_deleted"]][:20]
            for p in portals
        ]
        reqs = [r for row in zip(*each) for r in row]  # the portals interleaved
        before = sum(p.requests()[0] + p.requests()[1] for p in portals)
        limits0 = sum(p.limit_answers() for p in portals)
        if client == "wrk":
            r = run_wrk(port, reqs, args.seconds, args.connections, tmp)
        else:
            r = run_python(port, reqs, args.seconds, args.connections)
        rate = r["ok"] / r["seconds"]
        print(
            f"(a) most hooks/s: {r['ok']} accepted in {r['seconds']:.1f} s = {rate:.0f}/s "
            f"({r['client']}, closed loop; {r['non2xx']} non-2xx, {r['errors']} socket errors)"
        )
        print(
            f"(a)   latency of {r['latency_of']} at that rate: p50 {r['p50']:.1f} ms, p95 {r['p95']:.1f} ms, "
            f"p99 {r['p99']:.1f} ms, max {r['max']:.1f} ms"
        )
        if args.rate:
            r = run_paced(port, reqs, args.seconds, args.rate, args.paced_connections)
            print(
                f"(a) at {args.rate:g}/s (open loop, {args.paced_connections} keep-alive connections): "
                f"{r['ok']} accepted in {r['seconds']:.1f} s = {r['ok'] / r['seconds']:.0f}/s, "
                f"{r['non2xx']} non-2xx, {r['errors']} socket errors"
            )
            print(
                f"(a)   latency of 2xx answers, from when each was due: p50 {r['p50']:.1f} ms, "
                f"p95 {r['p95']:.1f} ms, p99 {r['p99']:.1f} ms, max {r['max']:.1f} ms  "
                f"[goal >= 500/s with p95 < 50 ms: "
                f"{'met' if rate >= 500 and r['ok'] / r['seconds'] >= 0.98 * args.rate and r['p95'] < 50 else 'NOT met'}]"
            )
        drained = quiet(portals, 2.0, 300)
        after = sum(p.requests()[0] + p.requests()[1] for p in portals)
        print(
            f"(a) refreshes behind: drained {drained:.1f} s after the load, {after - before} API requests, "
            f"{sum(p.limit_answers() for p in portals) - limits0} limit answers"
        )

    if args.skip != "b":
        b = burst(portals, args.changes, deadline_s=args.deadline)
        print(
            f"(b) burst: {b['changes']} deals won across {len(portals)} portals ({b['contacts']} contacts) "
            f"in {b['edits_s']:.2f} s; {b['hooks']} deliveries sent by the CRMs"
        )
        print(
            f"(b) change-to-card: p50 {b['p50']:.2f} s, p95 {b['p95']:.2f} s, max {b['max']:.2f} s; "
            f"{b['done']}/{b['changes']} on their cards, the last {b['all_s']:.1f} s after the burst began"
        )
        print(
            "(b)   "
            + "; ".join(
                f"{'amoCRM' if k == 'amo' else 'Bitrix24'}: p50 {v[1]:.2f} s, p95 {v[2]:.2f} s ({v[0]})"
                for k, v in sorted(b["per_crm"].items())
            )
        )
        for line in b["undone"][:10]:
            print(f"(b)   not on its card: {line}")
        crm = ", ".join(
            f"{'amoCRM' if k == 'amo' else 'Bitrix24'} {v[0]} reads + {v[1]} writes"
            for k, v in b["by_crm"].items()
        )
        print(
            f"(b) API requests: {b['reads']} reads, {b['writes']} writes ({crm}), {b['limit_answers']} limit answers"
        )
    print(
        f"serve: {sum(1 for d in log_lines(serve_log) if 'queued: refresh' in d.get('msg', '') or d.get('event') == 'refresh')} "
        f"refresh batches; total {time.monotonic() - t0:.0f} s"
    )


if __name__ == "__main__":
    main()
