"""The Ray Data engine: read tasks, a pool of encoder actors, Parquet write tasks, then shards.

The pipeline is Ray Data's own streaming executor:

    read_datasource(CorpusDatasource)  ->  map_batches(EncodeBatch actors)  ->  write_parquet(fragments)

- Reading goes through Ray Data's file datasource layer (local paths, NFS, S3, GCS alike) with our
  row parser in `_read_stream`, so each read task numbers rows exactly as the vetting pass did and
  tags each with its corpus position and shard. Rows of finished shards, and rows already in
  fragments from an interrupted run, are dropped right there, before any encoding.
- Each actor holds one SpladeEncoder, loaded once. Ray restarts a killed actor and retries its
  task (Ray Data's actor-pool defaults, max_restarts=-1 and max_task_retries=-1), so a lost worker
  costs time, not documents.
- Ray's Parquet writer writes fragments partitioned by shard (`.fragments/shard=K/`). Its files are
  named per write task, not per shard, and a retried task may write a row twice. So at the end the
  driver merges each shard's fragments: rows deduplicated by position, checked to cover the shard
  exactly, and published through the same ShardWriter as the local engine. A killed driver loses
  no finished fragment: a rerun reads their positions and encodes only the rest.

CPU sizing is what keeps this from hanging on small machines: Ray schedules actors first, and two
actors asking for 1 CPU each on a 2-CPU machine leave nothing for the read tasks, so the actors
wait for input forever. `resources()` always leaves a reserve for the read and write tasks. Which
devices need a GPU is the provider table's to say (`ProviderSpec.uses_gpu`): CUDA and TensorRT
actors each ask Ray for `gpus_per_worker` GPUs; "auto" and "cpu" ask for none.

Ray is quiet unless options.verbose: no worker output forwarded to this terminal, its own loggers
at ERROR, no execution plan, no progress bars (Ray Data's bars, one per operator, and where stdout
is no terminal a multi-line progress report every few seconds). Its full logs stay in its session
folder (/tmp/ray/session_*/logs). One line Ray's C++ core prints itself stays: "has constructor
arguments in the object store and max_restarts > 0" (ray-project/ray#53727), for every Ray Data
actor pool that restarts its actors, as this one must.
"""

from __future__ import annotations

import io
import logging
import shutil
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import ray
from ray.data.datasource import FileBasedDatasource

from ..errors import CorpusError
from ..runtime.providers import PROVIDERS, parse_device
from .hints import option
from .local import CHUNK
from .plan import Plan
from .shards import OutputDir
from .writers import Batch, ShardWriter

BLOCK_ROWS = 1024  # rows per block out of a read task
RAY_BATCH_FACTOR = 4  # rows per actor call = batch_size * this, so the encoder can sort by length


def resources(total_cpus: float, workers: int, cpus_per_worker: float | None) -> tuple[float, float]:
    """(CPUs per encoder actor, CPUs per read or write task), never over-asking: a reserve of
    min(1, total/2) CPUs stays free for read and write tasks (half each), and the actors share the
    rest, at most 1 CPU each unless told otherwise. On 2 CPUs: 2 actors get 0.5 each, 1 actor 1."""
    reserve = min(1.0, total_cpus / 2)
    if cpus_per_worker is None:
        per_actor = min(1.0, (total_cpus - reserve) / workers)
    else:
        per_actor = float(cpus_per_worker)
        if per_actor * workers > total_cpus - reserve + 1e-9:
            raise CorpusError(f"{workers} workers x {per_actor:g} CPUs leave under {reserve:g} of the cluster's "
                              f"{total_cpus:g} CPUs for reading and writing: the pipeline would hang; use fewer "
                              f"{option('workers')} or less {option('cpus_per_worker')}")
    if per_actor <= 0:
        raise CorpusError(f"the Ray cluster has {total_cpus:g} CPUs: too few to run an encoder actor")
    return per_actor, reserve / 2


def actor_device(device: str) -> tuple[str, bool]:
    """(the device each encoder actor opens, whether it needs a GPU), from the provider table. Ray
    hands each GPU actor its own GPUs through CUDA_VISIBLE_DEVICES, where they count from 0, so a
    GPU device's index is dropped ("cuda:3" -> "cuda"); "auto" asks for no GPU."""
    kind, _ = parse_device(device)
    if kind != "auto" and PROVIDERS[kind].uses_gpu:
        return kind, True
    return device, False


def default_workers(total_cpus: float, total_gpus: float, device: str) -> int:
    """One actor per GPU on a GPU device; otherwise one single-threaded actor per CPU (no thread
    wake-ups, no contention between sessions). Their CPU requests come out just under 1 each so that
    the reserve holds; the read and write tasks use little of it, so every core still encodes."""
    if actor_device(device)[1]:
        return max(1, int(total_gpus))
    return max(1, int(total_cpus))


@dataclass(frozen=True)
class ActorPlan:
    """What the encoder actors ask Ray for, and what they open."""

    workers: int
    cpus: float  # per encoder actor
    io_cpus: float  # per read or write task
    gpus: float | None  # per encoder actor; None: the device needs no GPU
    device: str  # what each actor opens


def actor_plan(cluster: Mapping[str, float], options: Any) -> ActorPlan:
    """The actors' resources on a cluster (ray.cluster_resources()) for the run's options; raises
    CorpusError when the cluster can't hold them (too few CPUs for the reserve, too few GPUs)."""
    cpus, gpus = float(cluster.get("CPU", 0)), float(cluster.get("GPU", 0))
    device, needs_gpu = actor_device(options.device)
    workers = options.workers or default_workers(cpus, gpus, options.device)
    per_actor, io_cpus = resources(cpus, workers, options.cpus_per_worker)
    if needs_gpu and gpus < workers * options.gpus_per_worker:
        raise CorpusError(f"{workers} workers x {options.gpus_per_worker:g} GPUs on {options.device}: the Ray "
                          f"cluster has {gpus:g} GPUs")
    return ActorPlan(workers, per_actor, io_cpus, options.gpus_per_worker if needs_gpu else None, device)


class CorpusDatasource(FileBasedDatasource):
    """The corpus files as rows (position, shard, id, text) of the shards still to encode."""

    def __init__(self, plan: Plan, shard_size: int, shards: list[int], done: np.ndarray) -> None:
        files = plan.files_for([plan.shard_range(s, shard_size) for s in shards])
        super().__init__([plan.files[i].path for i in files])
        self._plan, self._shard_size = plan, shard_size
        self._shards = np.asarray(sorted(shards), dtype=np.int64)
        self._done = done  # sorted positions already in fragments
        self._index = {plan.files[i].path: i for i in files}

    def _open_input_source(self, filesystem, path: str, **open_args):
        if path.lower().endswith((".parquet", ".pq")):  # Parquet needs random access, not a stream
            return filesystem.open_input_file(path)
        return super()._open_input_source(filesystem, path, **open_args)

    def _read_stream(self, f, path: str):
        index = self._index.get(path)
        if index is None:
            raise CorpusError(f"{path}: Ray read a file that was not vetted")
        stream = f if self._plan.files[index].format == "parquet" else io.BufferedReader(f)
        rows = self._plan.accepted_rows(index, stream)
        while block := [row for _, row in zip(range(BLOCK_ROWS), rows)]:
            table = self._block(block)
            if table.num_rows:
                yield table

    def _block(self, rows: list[tuple[int, str, str]]) -> pa.Table:
        positions = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
        shards = positions // self._shard_size
        keep = np.isin(shards, self._shards) & ~_contains(self._done, positions)
        picked = np.flatnonzero(keep).tolist()
        return pa.table({"position": positions[keep], "shard": shards[keep],
                         "id": pa.array([rows[i][1] for i in picked], pa.string()),
                         "text": pa.array([rows[i][2] for i in picked], pa.string())})


def _contains(sorted_values: np.ndarray, values: np.ndarray) -> np.ndarray:
    """values in sorted_values, by binary search: np.isin would sort the (possibly millions of) done
    positions again for every block of 1024 rows."""
    if not sorted_values.size:
        return np.zeros(len(values), dtype=bool)
    at = np.minimum(np.searchsorted(sorted_values, values), len(sorted_values) - 1)
    return sorted_values[at] == values


class EncodeBatch:
    """The Ray Data callable class: one SpladeEncoder per actor, built once in the constructor."""

    def __init__(self, export_dir: str, device: str, threads: int, max_length: int | None, batch_size: int,
                 top_k: int | None, threshold: float | None, keep_text: bool) -> None:
        from ..runtime import SpladeEncoder

        self.encoder = SpladeEncoder(export_dir, device=device, threads=threads, max_length=max_length)
        self.options = {"batch_size": batch_size, "top_k": top_k, "threshold": threshold}
        self.keep_text = keep_text

    def __call__(self, table: pa.Table) -> pa.Table:
        vectors = self.encoder.encode_document(table.column("text").to_pylist(), **self.options)
        offsets = pa.array(vectors.indptr.astype(np.int32))
        columns = {name: table.column(name) for name in ("position", "shard", "id")}
        columns["indices"] = pa.ListArray.from_arrays(offsets, pa.array(vectors.indices, pa.int32()))
        columns["values"] = pa.ListArray.from_arrays(offsets, pa.array(vectors.values, pa.float32()))
        if self.keep_text:
            columns["text"] = table.column("text")
        return pa.table(columns)


def run_ray(export_dir: str | Path, plan: Plan, shards: list[int], options: Any, writer: ShardWriter) -> int:
    """Encode the given shards on Ray and publish each; returns the documents encoded in this call.
    Joins the Ray instance this process already has, else starts or joins one (options.ray_address)
    and shuts it down at the end."""
    started = not ray.is_initialized()
    if started:
        quiet = not options.verbose
        ray.init(address=options.ray_address, include_dashboard=False, log_to_driver=not quiet,
                 logging_level=logging.ERROR if quiet else logging.INFO)
    try:
        out: OutputDir = writer.out
        done = _done_positions(out.fragments, shards)
        todo = sum(plan.shard_rows(s, options.shard_size) for s in shards) - len(done)
        if todo:
            try:
                with _quiet_ray_data(not options.verbose, options.progress):
                    _run_pipeline(export_dir, plan, shards, done, options, writer.keeps_text, out.fragments)
            except ray.exceptions.RayError as e:  # an actor or task failed for good: its cause, in one line
                cause = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
                raise CorpusError(f"the Ray pipeline failed: {cause}; what was written is kept for the rerun") \
                    from None
        for shard in shards:
            _merge(plan, shard, options.shard_size, out.fragments, writer)
        shutil.rmtree(out.fragments, ignore_errors=True)
        return todo
    finally:
        if started:
            ray.shutdown()


def _run_pipeline(export_dir: str | Path, plan: Plan, shards: list[int], done: np.ndarray, options: Any,
                  keep_text: bool, fragments: Path) -> None:
    actors = actor_plan(ray.cluster_resources(), options)
    dataset = ray.data.read_datasource(CorpusDatasource(plan, options.shard_size, shards, done),
                                       num_cpus=actors.io_cpus)
    # no max_restarts here: actor pools default to restarting dead actors and retrying their batches
    dataset = dataset.map_batches(
        EncodeBatch, batch_size=options.batch_size * RAY_BATCH_FACTOR, batch_format="pyarrow",
        fn_constructor_kwargs={
            "export_dir": str(Path(export_dir).resolve()), "device": actors.device,
            "threads": max(1, int(actors.cpus)), "max_length": options.max_length,
            "batch_size": options.batch_size, "top_k": options.top_k, "threshold": options.threshold,
            "keep_text": keep_text},
        compute=ray.data.ActorPoolStrategy(size=actors.workers), num_cpus=actors.cpus, num_gpus=actors.gpus)
    dataset.write_parquet(str(fragments), partition_cols=["shard"], ray_remote_args={"num_cpus": actors.io_cpus})


@contextmanager
def _quiet_ray_data(quiet: bool, progress: bool) -> Iterator[None]:
    """Ray Data's settings for one run, put back after it: with quiet, no progress bars and no
    execution plan, and its console handler only shows errors; its log file keeps everything."""
    context = ray.data.DataContext.get_current()
    saved = (context.enable_progress_bars, context.enable_operator_progress_bars, context.print_on_execution_start)
    console = [h for h in logging.getLogger("ray.data").handlers
               if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler)]
    levels = [h.level for h in console]
    context.enable_progress_bars = context.enable_operator_progress_bars = progress and not quiet
    context.print_on_execution_start = not quiet
    if quiet:
        for handler in console:
            handler.setLevel(logging.ERROR)
    try:
        yield
    finally:
        context.enable_progress_bars, context.enable_operator_progress_bars, context.print_on_execution_start = saved
        for handler, level in zip(console, levels):
            handler.setLevel(level)


def _done_positions(fragments: Path, shards: list[int]) -> np.ndarray:
    """Positions already encoded into readable fragments of the shards to do. Fragments of other
    shards (published before a crash cut the cleanup short) and unreadable ones (a write cut off
    mid-file) are deleted: the first are done, the second are redone."""
    wanted, found = set(shards), []
    for part in sorted(fragments.glob("shard=*")) if fragments.is_dir() else []:
        if int(part.name.split("=", 1)[1]) not in wanted:
            shutil.rmtree(part)
            continue
        for path in sorted(part.glob("*.parquet")):
            table = _read_fragment(path, ["position"])
            if table is None:
                path.unlink()
            else:
                found.append(table.column("position").to_numpy())
    return np.unique(np.concatenate(found)) if found else np.zeros(0, dtype=np.int64)


def _read_fragment(path: Path, columns: list[str] | None = None) -> pa.Table | None:
    try:
        return pq.ParquetFile(path).read(columns=columns)
    except (OSError, pa.ArrowException):
        return None


def _merge(plan: Plan, shard: int, shard_size: int, fragments: Path, writer: ShardWriter) -> None:
    """One shard from its fragments: each position once, in input order, all of them or an error."""
    part = fragments / f"shard={shard}"
    tables = [t for t in (_read_fragment(p) for p in sorted(part.glob("*.parquet"))) if t is not None]
    start, end = plan.shard_range(shard, shard_size)
    if not tables:
        raise CorpusError(f"shard {shard}: the Ray run wrote none of its {end - start} documents; rerun")
    table = pa.concat_tables(tables)
    positions, first = np.unique(table.column("position").to_numpy(), return_index=True)
    if len(positions) != end - start or positions[0] != start or positions[-1] != end - 1:
        raise CorpusError(f"shard {shard}: the Ray run wrote {len(positions)} of its {end - start} documents; "
                          "rerun to encode the rest")
    table = table.take(pa.array(first))  # np.unique sorts: rows now in position (input) order
    with writer.shard(shard, end - start) as handle:
        for offset in range(0, table.num_rows, CHUNK):
            handle.write(_batch(table.slice(offset, CHUNK), writer.keeps_text))
    shutil.rmtree(part)


def _batch(table: pa.Table, keep_text: bool) -> Batch:
    indices = table.column("indices").combine_chunks()
    values = table.column("values").combine_chunks()
    offsets = indices.offsets.to_numpy()
    return Batch(table.column("id").to_pylist(), table.column("text").to_pylist() if keep_text else None,
                 offsets - offsets[0], indices.flatten().to_numpy(), values.flatten().to_numpy())
