"""Many callers, one encoder: 64 concurrent clients sending single texts, three ways, in one run.

    python -m benchmarks.serve                 # 64 clients, 3 alternating repeats of 10 s each
    python -m benchmarks.serve --seconds 2 --repeats 1 --clients 16   # a quick look

(a) direct: 64 threads each calling encoder.encode_query(text); (b) micro-batcher: the same threads
calling MicroBatcher.encode_query(text); (c) server: splade-serve in its own process, 64 keep-alive
HTTP clients (one asyncio aiohttp process, so the clients cost little of the cores) posting
{"inputs": text} to /query/embed_sparse. Closed loop: each client sends its next text when its
last is answered. The texts are SciFact queries. Per mode: texts/s over the timed window and the
p50/p99 latency of its requests; modes alternate across repeats (a b c a b c ...) so machine drift
hits all alike, and the median repeat is reported. The batcher's and the server's vectors are
checked against single-text encodes (same non-zero terms, values within 1e-6). Writes
results/serve-<date>-<cpu>.{json,png}.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import threading
import time
from datetime import date
from pathlib import Path

import numpy as np

from splade_rt.machine import machine_info

from .common import CACHE, REPO, cached_export, collection_texts, save_figure, script_parser

TOLERANCE = 1e-6
MODES = ("direct", "batcher", "server")
LABELS = {"direct": "encode_query, direct", "batcher": "MicroBatcher", "server": "splade-serve (HTTP)"}


def closed_loop(call, texts: list[str], clients: int, seconds: float, warmup: float) -> dict:
    """`clients` threads, each calling call(text) back to back over its share of the texts: the calls
    that ended in the timed window [warmup, warmup + seconds), their count and latencies (counted by
    their end, a call that waited through the whole window still counts: a slow caller's wait shows)."""
    from fan_out import in_threads  # tests/, on the import path through benchmarks.common

    latencies: list[list[float]] = [[] for _ in range(clients)]
    done = [0] * clients  # every call, the warm-up's too (for texts per CPU-second)
    start = time.perf_counter()
    window = (start + warmup, start + warmup + seconds)

    def client(c: int) -> None:
        i = c
        mine = latencies[c]
        while True:
            t0 = time.perf_counter()
            if t0 >= window[1]:
                return
            call(texts[i % len(texts)])
            done[c] += 1
            t1 = time.perf_counter()
            if window[0] <= t1 < window[1]:
                mine.append(t1 - t0)
            i += clients

    in_threads(client, clients)  # a client's error is re-raised here, in the benchmark's thread
    return {**summary([x for mine in latencies for x in mine], seconds), "all_calls": sum(done)}


def process_cpu_s(pid: int | None = None) -> float:
    """User + system CPU seconds of a process so far (this one by default): with other work on the
    machine, texts per CPU-second says what each way costs, apart from its share of the cores."""
    if pid is None:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def summary(latencies: list[float], seconds: float) -> dict:
    values = np.asarray(latencies) * 1e3
    return {"requests": len(values), "texts_per_s": len(values) / seconds,
            "p50_ms": float(np.percentile(values, 50)), "p99_ms": float(np.percentile(values, 99)),
            "mean_ms": float(values.mean())}


# -- (c): the HTTP clients, run as `python -m benchmarks.serve --client URL ...` in their own process ---------


async def _http_clients(url: str, texts: list[str], clients: int, seconds: float, warmup: float) -> dict:
    import aiohttp

    connector = aiohttp.TCPConnector(limit=clients, force_close=False)
    latencies: list[float] = []
    done = [0]
    bodies = [json.dumps({"inputs": t}).encode() for t in texts]
    headers = {"Content-Type": "application/json"}
    async with aiohttp.ClientSession(connector=connector) as session:
        start = time.perf_counter()
        window = (start + warmup, start + warmup + seconds)
        statuses: dict[int, int] = {}

        async def client(c: int) -> None:
            i = c
            while True:
                t0 = time.perf_counter()
                if t0 >= window[1]:
                    return
                async with session.post(url, data=bodies[i % len(bodies)], headers=headers) as response:
                    await response.read()
                    statuses[response.status] = statuses.get(response.status, 0) + 1
                done[0] += 1
                t1 = time.perf_counter()
                if window[0] <= t1 < window[1]:
                    latencies.append(t1 - t0)
                i += clients

        cpu0 = time.process_time()
        await asyncio.gather(*(client(c) for c in range(clients)))
        cpu = time.process_time() - cpu0
    result = summary(latencies, seconds)
    result["client_cpu_s"] = cpu
    result["all_calls"] = done[0]
    result["statuses"] = statuses
    return result


def client_main(argv: list[str]) -> None:
    url, texts_file, clients, seconds, warmup = argv
    texts = json.loads(Path(texts_file).read_text())
    result = asyncio.run(_http_clients(url, texts, int(clients), float(seconds), float(warmup)))
    print(json.dumps(result))


def http_round(url: str, texts_file: Path, clients: int, seconds: float, warmup: float) -> dict:
    out = subprocess.run([sys.executable, "-m", "benchmarks.serve", "--client", url, str(texts_file), str(clients),
                          str(seconds), str(warmup)], cwd=REPO, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


class Server:
    """splade-serve on a free port, in its own process, for the benchmark's lifetime."""

    def __init__(self, export: Path, variant: str, extra: list[str]) -> None:
        command = [sys.executable, "-m", "splade_rt.serve.cli", str(export), "--port", "0", "--device", "cpu",
                   "--variant", variant, "--max-client-batch-size", "64", *extra]
        self.process = subprocess.Popen(command, cwd=REPO, stderr=subprocess.PIPE, text=True)
        line = self.process.stderr.readline()
        found = re.search(r"http://([\d.]+):(\d+)", line)
        if not found:
            self.process.kill()
            raise RuntimeError(f"splade-serve did not start: {line}{self.process.stderr.read()}")
        self.base = f"http://{found.group(1)}:{found.group(2)}"
        threading.Thread(target=self.process.stderr.read, daemon=True).start()  # drain its log
        self._wait_ready()

    def _wait_ready(self) -> None:
        import urllib.request

        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                with urllib.request.urlopen(self.base + "/health", timeout=2) as response:
                    if response.status == 200:
                        return
            except OSError:
                time.sleep(0.2)
        raise RuntimeError("splade-serve did not answer /health in 120 s")

    def post(self, route: str, body: dict) -> list:
        import urllib.request

        request = urllib.request.Request(self.base + route, data=json.dumps(body).encode(),
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=60) as response:
            return json.loads(response.read())

    def close(self) -> None:
        self.process.terminate()
        self.process.wait(30)


def cost_by_batch(export: Path, variant: str, texts: list[str], sizes=(1, 8, 64), repeats: int = 3) -> dict:
    """CPU milliseconds per text on one thread at several batch sizes: what sharing a graph run can save
    at most (each size's median over repeats; sizes interleaved)."""
    from splade_rt import SpladeEncoder

    encoder = SpladeEncoder(export, device="cpu", variant=variant, threads=1)
    encoder.encode_query(texts[:64], batch_size=64)
    costs: dict[int, list[float]] = {n: [] for n in sizes}
    for _ in range(repeats):
        for n in sizes:
            before = process_cpu_s()
            for start in range(0, len(texts), n):
                encoder.encode_query(texts[start:start + n], batch_size=n)
            costs[n].append((process_cpu_s() - before) / len(texts) * 1e3)
    return {str(n): statistics.median(values) for n, values in costs.items()}


def check_batcher(encoder, batcher, texts: list[str], clients: int) -> dict:
    """Each text through the batcher (concurrently, so they share runs) against its single-text encode."""
    from fan_out import in_threads  # tests/, on the import path through benchmarks.common

    results: list = [None] * len(texts)

    def work(c: int) -> None:
        for i in range(c, len(texts), clients):
            results[i] = batcher.encode_query(texts[i])

    in_threads(work, clients)
    rows = [(r.indices, r.values) for r in results]
    return compare(encoder, texts, rows)


def check_server(encoder, server: Server, texts: list[str]) -> dict:
    rows = []
    for start in range(0, len(texts), 64):
        for row in server.post("/query/embed_sparse", {"inputs": texts[start:start + 64]}):
            rows.append((np.array([e["index"] for e in row]), np.array([e["value"] for e in row], np.float32)))
    return compare(encoder, texts, rows)


def compare(encoder, texts: list[str], rows: list) -> dict:
    mismatched, worst = 0, 0.0
    for text, (indices, values) in zip(texts, rows):
        single = encoder.encode_query(text)
        if not np.array_equal(single.indices, indices):
            mismatched += 1
            continue
        worst = max(worst, float(np.abs(single.values - values).max(initial=0.0)))
    return {"texts": len(texts), "term_mismatches": mismatched, "max_abs_diff": worst,
            "equal_within_1e-6": mismatched == 0 and worst <= TOLERANCE}


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["modes"]
    modes = [m for m in MODES if m in rows]
    names = [LABELS[m] for m in modes]
    colors = {"direct": "#999999", "batcher": "#3b7dd8", "server": "#2a9d6f"}
    fig, (left, middle, right) = plt.subplots(1, 3, figsize=(12, 3.4))
    left.bar(names, [rows[m]["texts_per_s"] for m in modes], color=[colors[m] for m in modes])
    left.set_ylabel("texts/s (median repeat)")
    middle.bar(names, [rows[m]["texts_per_cpu_s"] for m in modes], color=[colors[m] for m in modes])
    middle.set_ylabel("texts per CPU-second")
    x = np.arange(len(modes))
    right.bar(x - 0.2, [rows[m]["p50_ms"] for m in modes], 0.4, label="p50")
    right.bar(x + 0.2, [rows[m]["p99_ms"] for m in modes], 0.4, label="p99")
    right.set_xticks(x, names)
    right.set_ylabel("latency, ms")
    right.legend()
    for ax in (left, middle, right):
        ax.tick_params(axis="x", labelsize=7)
    machine = result["machine"]
    save_figure(fig, path, f"{result['clients']} concurrent single-text clients, {machine['cpu']} "
                           f"{machine['cores']} cores, {result['variant']} ({result['date']})")


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--client":
        client_main(sys.argv[2:])
        return
    parser = script_parser(__doc__)
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=10.0, help="timed window per mode and repeat")
    parser.add_argument("--warmup", type=float, default=1.0, help="untimed seconds before each window")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--export", type=Path, default=None, help="an export to use (default: the bundled model, "
                                                                     "exported once into benchmarks/.cache)")
    parser.add_argument("--max-wait-ms", type=float, default=None, help="the batcher's (default: the device's)")
    parser.add_argument("--max-batch-tokens", type=int, default=None, help="the batcher's (default: the device's)")
    parser.add_argument("--runs", type=int, default=None, help="the batcher's runs in flight (default: the device's)")
    parser.add_argument("--modes", default=",".join(MODES), help="which of direct,batcher,server to run")
    parser.add_argument("--no-save", action="store_true", help="print only (for trying settings)")
    args = parser.parse_args()
    started = time.time()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # single texts: no thread pool to wake

    from splade_rt import SpladeEncoder
    from splade_rt.serve import MicroBatcher

    export = args.export or cached_export(None, CACHE / "export-serve")
    _, queries = collection_texts("scifact")
    if not queries:
        from splade_rt.export.texts import QUERIES

        queries = list(QUERIES)
    encoder = SpladeEncoder(export, device="cpu")
    variant = encoder.placement.precision
    options = {k: v for k, v in (("max_wait_ms", args.max_wait_ms), ("max_batch_tokens", args.max_batch_tokens),
                                 ("runs", args.runs)) if v is not None}
    batcher = MicroBatcher(encoder, **options)
    modes = [m for m in args.modes.split(",") if m]
    server = None
    if "server" in modes:
        flags = [x for k in options if k != "runs" for x in (f"--{k.replace('_', '-')}", str(options[k]))]
        server = Server(export, variant, flags)
    texts_file = CACHE / "serve-queries.json"
    CACHE.mkdir(exist_ok=True)
    texts_file.write_text(json.dumps(queries))
    rounds: dict[str, list[dict]] = {m: [] for m in modes}
    try:
        for repeat in range(args.repeats):
            for mode in modes:
                own, served = process_cpu_s(), process_cpu_s(server.process.pid) if server else 0.0
                if mode == "direct":
                    row = closed_loop(encoder.encode_query, queries, args.clients, args.seconds, args.warmup)
                elif mode == "batcher":
                    row = closed_loop(batcher.encode_query, queries, args.clients, args.seconds, args.warmup)
                else:
                    row = http_round(server.base + "/query/embed_sparse", texts_file, args.clients, args.seconds,
                                     args.warmup)
                if mode == "server":  # the server's process and the HTTP clients' process
                    cpu = process_cpu_s(server.process.pid) - served + row["client_cpu_s"]
                else:  # the encoder's threads and the calling threads, all in this process
                    cpu = process_cpu_s() - own
                row["cpu_s"] = cpu
                row["texts_per_cpu_s"] = row["all_calls"] / cpu
                rounds[mode].append(row)
                print(f"repeat {repeat + 1} {mode:8s} {row['texts_per_s']:8.0f} texts/s  p50 {row['p50_ms']:6.1f} ms"
                      f"  p99 {row['p99_ms']:6.1f} ms"
                      f"  {row['texts_per_cpu_s']:6.0f} texts/cpu-s", flush=True)
        sample = queries[:256]
        cost = cost_by_batch(export, variant, sample)
        print("CPU ms per text on one thread, by batch size:", {k: round(v, 2) for k, v in cost.items()}, flush=True)
        checks = {"batcher": check_batcher(encoder, batcher, sample, args.clients)}
        if server is not None:
            checks["server"] = check_server(encoder, server, sample)
    finally:
        batcher.close()
        if server is not None:
            server.close()
    medians = {m: sorted(rs, key=lambda r: r["texts_per_s"])[len(rs) // 2] for m, rs in rounds.items()}
    bars = {}
    if {"direct", "batcher"} <= set(medians):
        b = medians["batcher"]
        bars["batcher_vs_direct"] = b["texts_per_s"] / medians["direct"]["texts_per_s"]
        bars["batcher_p99_over_p50"] = b["p99_ms"] / b["p50_ms"]
    if {"batcher", "server"} <= set(medians):
        bars["server_vs_batcher"] = medians["server"]["texts_per_s"] / medians["batcher"]["texts_per_s"]
    bars["pass"] = {"batcher >= 1.5x direct": bars.get("batcher_vs_direct", 0) >= 1.5,
                    "batcher p99 <= 3x p50": bars.get("batcher_p99_over_p50", 99) <= 3,
                    "server >= 0.7x batcher": bars.get("server_vs_batcher", 0) >= 0.7}
    result = {
        "date": date.today().isoformat(), "machine": machine_info(), "clients": args.clients,
        "seconds": args.seconds, "warmup": args.warmup, "repeats": args.repeats, "variant": variant,
        "graph": encoder.placement.file, "texts": "SciFact queries", "queries": len(queries),
        "mean_query_tokens": float(np.mean([len(ids) for ids in encoder.tokenize(queries)])),
        "batcher": {"max_wait_ms": batcher.max_wait_ms, "max_batch_tokens": batcher.max_batch_tokens,
                    "runs": batcher.runs, "max_queue": batcher.max_queue},
        "encoder": {"max_batch_tokens": encoder.max_batch_tokens, "workers": encoder.workers},
        "modes": medians, "rounds": rounds, "bars": bars, "checks": checks,
        "cpu_ms_per_text_one_thread_by_batch": cost,
        "load_average_at_end": os.getloadavg(), "self_cpu_s": resource.getrusage(resource.RUSAGE_SELF).ru_utime,
        "command": "python -m benchmarks." + Path(__file__).stem + " " + " ".join(sys.argv[1:]),
        "wall_s": round(time.time() - started, 1),
    }
    print(json.dumps({"bars": bars, "checks": checks}, indent=1))
    if args.no_save:
        return
    args.out.mkdir(parents=True, exist_ok=True)
    cpu = re.sub(r"[^a-z0-9]+", "-", result["machine"]["cpu"].lower()).strip("-")
    stem = args.out / f"serve-{result['date']}-{cpu}-{result['machine']['cores']}cpu"
    stem.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
    plot(result, stem.with_suffix(".png"))
    print(f"wrote {stem}.json and .png")


if __name__ == "__main__":
    main()
