"""Where a graph's time goes: onnxruntime's per-node profile over the benchmark's passages.

    python -m benchmarks.profile_graph [--variant fp32-screened|fp32-native|...] [--threads 1] [--export DIR]

Runs the benchmark's 512 passages in length-sorted batches of up to 32 (as SpladeEncoder cuts them)
through one graph with profiling on, and prints the share of kernel time per node, the vocab
chunks of one step summed together. For fp32-native the native head's time (kernels/_head.c, on
the same threads) is one more row, and its int8 multiply-adds per second over the whole head
(screen and exact pass) are reported: a lower bound on its product's rate. Writes
results/profile-<variant>-<threads>t-<date>.json.
"""

from __future__ import annotations

import collections
import json
import re
import time
from datetime import date
from pathlib import Path

from .common import graph_feeds, load_texts, prepare_models, script_parser


def main(argv: list[str] | None = None) -> int:
    import onnxruntime as ort

    from splade_rt import SpladeEncoder
    from splade_rt.runtime.session import session_options

    p = script_parser(__doc__)
    p.add_argument("--variant", default="fp32-screened")
    p.add_argument("--threads", type=int, default=1, help="intra-op threads (1: what each of 2 workers runs)")
    p.add_argument("--export", type=Path)
    args = p.parse_args(argv)
    export = args.export or prepare_models(None, naive=False)["chunked"]
    enc = SpladeEncoder(export, device="cpu", variant=args.variant, workers=1)
    passages, _ = load_texts(False)
    batches = graph_feeds(enc, passages)

    opts = session_options(args.threads, spinning=False)
    opts.enable_profiling = True
    opts.profile_file_prefix = str(args.out / "onnxruntime_profile")
    args.out.mkdir(parents=True, exist_ok=True)
    session = ort.InferenceSession(str(export / enc.placement.file), opts, providers=["CPUExecutionProvider"])
    head = enc.placement.head  # the native head, or None for a fused graph
    outputs = None if head is not None else ["nonzero_index", "nonzero_value"]

    def run(feed: dict) -> float:
        """The graph, then the native head if any: the head's seconds."""
        if head is None:
            session.run(outputs, feed)
            return 0.0
        (states,) = session.run(None, {k: feed[k] for k in ("input_ids", "attention_mask")})
        start = time.perf_counter()
        head(states, feed["attention_mask"], args.threads)
        return time.perf_counter() - start

    head_s = run(batches[0])
    t = time.perf_counter()
    for feed in batches:
        head_s += run(feed)
    seconds = time.perf_counter() - t
    trace = Path(session.end_profiling())
    events = json.loads(trace.read_text())
    trace.unlink()

    per_node: collections.Counter = collections.Counter()
    for e in events:  # the warm-up run (the longest batch) is in the profile too: len(batches) + 1 runs
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            name = re.sub(r"_\d+_\d+$", "_*", e["name"][: -len("_kernel_time")])
            per_node[f"{e['args']['op_name']} {name}"] += e["dur"]
    if head is not None:
        per_node["NativeHead kernels/_head.c (screen and exact pass)"] = round(head_s * 1e6)
    total = sum(per_node.values())
    rows = [{"node": node, "share": round(us / total, 4), "ms_per_batch": round(us / 1e3 / (len(batches) + 1), 2)}
            for node, us in per_node.most_common()]
    report = {"date": date.today().isoformat(), "variant": args.variant, "threads": args.threads,
              "passages": len(passages), "batches": len(batches), "passages_per_s_profiled": len(passages) / seconds,
              "nodes": rows}
    if head is not None:  # every token's screen: tokens x vocab x hidden int8 multiply-adds, warm-up included
        tokens = sum(int(feed["attention_mask"].sum()) for feed in [batches[0], *batches])
        report["head_int8_gmacs_per_s_per_thread"] = round(tokens * head.vocab * head.hidden / head_s / 1e9
                                                           / args.threads, 1)
    name = f"profile-{args.variant}-{args.threads}t-{report['date']}.json"
    (args.out / name).write_text(json.dumps(report, indent=2) + "\n")
    print(f"{args.variant}, {args.threads} thread(s): {len(passages) / seconds:.1f} passages/s with profiling on"
          + (f"; head: {report['head_int8_gmacs_per_s_per_thread']} G int8 MACs/s per thread" if head else ""))
    for row in rows[:20]:
        print(f"  {row['share'] * 100:5.1f}%  {row['ms_per_batch']:7.2f} ms/batch  {row['node']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
