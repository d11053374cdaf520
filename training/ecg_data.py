"""Fast ECG batches from datasets in the project's schema (docs/dataset_schema.md).

The trainer, the zero-shot evaluator and the benchmarks share this loader:

    ds = load_ecg_dataset("path/or/org-repo", split="train")
    queries = class_names(ds)                       # the ClassLabel names are the query list
    for batch in ecg_dataloader(ds, batch_size=64, shuffle=True, seed=0, epoch=e):
        batch["ecg"]        # int16 (B, 12, 5000), CPU (pinned when a GPU is present)
        batch["adc_gain"]   # float32 (B, 12)
        batch["labels"]     # float32 multi-hot (B, Q) (only when the dataset has `labels`)
        batch["id"]         # list[str]

Samples stay int16 (120 KB per ECG) until the caller moves them to the device and calls
`modeling_supreme.processing_supreme.ecg_from_digital`. `datasets`' numpy/torch formatters build every row as
Python objects and widen int16 to int64; here a batch is gathered straight from the memory-mapped Arrow columns:
the Array2D column's flat int16 child values are viewed as numpy (no copy) and each row is copied once into a
reused (pinned, when a GPU is present) batch buffer; labels become multi-hot with one vectorised scatter.

Workers are threads, not processes: gathering is a memcpy from the page cache that numpy runs without the GIL
(and Parquet decoding in pyarrow releases it too), while worker processes would re-fault the memory map and pickle
every 30 MB batch through shared memory (measured: ten times slower, docs/performance_measurements.md).

Map-style datasets (`load_dataset` of a folder: Parquet converted once to a memory-mapped Arrow cache) are the fast
path. Streaming reads Parquet directly, where decoding the nested `ecg` lists costs about 1,400 ECG/s per thread.

Distributed runs: pass `num_processes` / `process_index` (e.g. from `accelerator`) and do NOT pass the loader
through `accelerator.prepare`. Map-style datasets draw one permutation per (seed, epoch), identical on every process;
each global batch of `batch_size * num_processes` rows is cut into disjoint per-process parts, so every process
runs the same number of steps. Streaming datasets are split with `datasets.distributed.split_dataset_by_node` over
processes x workers (whole shards when their count divides evenly, else every n-th example).

Resuming: `start_batch` skips the first batches of the epoch (map-style: without reading them).
"""

from __future__ import annotations

import itertools
import os
import queue
import sys
import threading
import weakref
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import datasets
import numpy as np
import pyarrow as pa
import torch
from datasets.distributed import split_dataset_by_node

ECG_SHAPE = (12, 5000)
REQUIRED_COLUMNS = ("id", "ecg", "adc_gain")


def load_ecg_dataset(
    path_or_repo: str | os.PathLike,
    config: str | None = None,
    split: str = "train",
    streaming: bool = False,
    **load_kwargs,
) -> datasets.Dataset | datasets.IterableDataset:
    """`datasets.load_dataset` of a local folder (Parquet + card) or a Hub repo, checked against the ECG schema.

    Raises FileNotFoundError when the folder / repo does not exist and ValueError when the split or a required
    column (`id`, `ecg` Array2D((12, 5000), "int16"), `adc_gain`) is missing, each naming the dataset.
    """
    name = str(path_or_repo)
    local = Path(name).expanduser()
    looks_local = name.startswith(("/", "./", "../", "~")) or name.count("/") > 1 or name.endswith(".parquet")
    if not local.exists() and looks_local:
        raise FileNotFoundError(
            f"ECG dataset {name!r} not found: pass a folder written by the builders (Parquet + README.md) "
            "or a Hub dataset repo id such as 'org/name'."
        )
    try:
        ds = datasets.load_dataset(str(local) if local.exists() else name, config, split=split, streaming=streaming,
                                   **load_kwargs)
    except (FileNotFoundError, datasets.exceptions.DatasetNotFoundError, ConnectionError) as e:
        raise FileNotFoundError(
            f"could not load ECG dataset {name!r} (config={config!r}): {e}. Pass a local dataset folder or a Hub "
            "dataset repo id that exists and is reachable."
        ) from e
    except ValueError as e:
        if "split" in str(e).lower():
            raise ValueError(f"ECG dataset {name!r} (config={config!r}) has no split {split!r}: {e}") from e
        raise
    check_ecg_features(ds.features, name)
    return ds


def check_ecg_features(features: datasets.Features | None, where: str = "dataset") -> None:
    """ValueError naming `where` and the column when `features` do not follow the ECG schema."""
    if features is None:
        raise ValueError(f"{where}: features are unknown (a streaming dataset without metadata); write it with the builders")
    missing = [c for c in REQUIRED_COLUMNS if c not in features]
    if missing:
        raise ValueError(f"{where}: missing column(s) {missing}; the ECG schema needs {list(REQUIRED_COLUMNS)} (+ labels)")
    ecg = features["ecg"]
    if not (isinstance(ecg, datasets.Array2D) and tuple(ecg.shape) == ECG_SHAPE and ecg.dtype == "int16"):
        raise ValueError(f"{where}: column 'ecg' is {ecg}, expected Array2D(shape={ECG_SHAPE}, dtype='int16')")


def class_names(dataset: datasets.Dataset | datasets.IterableDataset | datasets.Features) -> list[str]:
    """The `labels` ClassLabel names: the query list of this dataset.

    Raises ValueError when there is no `labels` column of ClassLabel lists.
    """
    features = dataset if isinstance(dataset, datasets.Features) else dataset.features
    label_feature = (features or {}).get("labels")
    inner = getattr(label_feature, "feature", None)
    if not isinstance(inner, datasets.ClassLabel):
        raise ValueError(
            f"the dataset has no 'labels' column of List(ClassLabel(names=[...])) (found {label_feature}); "
            "pre-training and zero-shot evaluation need labelled data: build it with builders/ (docs/dataset_schema.md)"
        )
    return list(inner.names)


def ecg_dataloader(
    dataset: datasets.Dataset | datasets.IterableDataset,
    batch_size: int,
    shuffle: bool,
    seed: int = 0,
    num_workers: int = 0,
    *,
    epoch: int = 0,
    start_batch: int = 0,
    drop_last: bool | None = None,
    num_processes: int = 1,
    process_index: int = 0,
    pin_memory: bool | None = None,
    shuffle_buffer: int = 1000,
) -> EcgLoader:
    """Batches of dicts: `ecg` int16 (B, 12, 5000), `adc_gain` float32 (B, 12), `labels` float32 (B, Q), `id`.

    Args:
        batch_size: per-process batch size.
        shuffle: permute the rows with `seed` and `epoch` (streaming: shard order + a `shuffle_buffer` of rows).
        num_workers: background threads preparing batches (0: in the caller's thread).
        epoch: selects the permutation, so every epoch differs and a resumed run repeats it exactly.
        start_batch: skip this many batches of the epoch (resume).
        drop_last: drop the incomplete last batch; defaults to `shuffle` (training). Without it the last global
            batch is split as evenly as possible over the processes (their union is every row once).
        num_processes, process_index: this process's share of the data (e.g. `accelerator.num_processes`,
            `accelerator.process_index`).
        pin_memory: defaults to `torch.cuda.is_available()`.

    Batches are independent tensors: keeping one (or a view of it) is safe; its buffer is reused only once freed.
    """
    drop_last = shuffle if drop_last is None else drop_last
    pin_memory = torch.cuda.is_available() if pin_memory is None else pin_memory
    if not 0 <= process_index < num_processes:
        raise ValueError(f"process_index={process_index} must be in [0, num_processes={num_processes})")
    names = _class_names_or_none(dataset.features)
    if isinstance(dataset, datasets.IterableDataset):
        dataset.set_epoch(epoch if shuffle else 0)  # datasets reshuffles the shard order for every epoch > 0
        source = _StreamingBatches(dataset, names, batch_size, drop_last, num_processes, process_index, start_batch,
                                   shuffle_buffer if shuffle else 0, (seed, epoch), pin_memory)
        return EcgLoader(source, None, num_workers)
    batches = _batch_indices(len(dataset), batch_size, shuffle, seed, epoch, drop_last, num_processes, process_index)
    source = _SOURCES.setdefault(dataset, {})
    if pin_memory not in source:  # built once per dataset: its views and its buffers serve every epoch
        source[pin_memory] = _ArrowBatches(dataset, names, pin_memory)
    buffers = source[pin_memory].buffers
    buffers.keep = max(buffers.keep, 2 * num_workers + 4)  # in flight + held by the caller
    return EcgLoader(source[pin_memory], batches[start_batch:], num_workers)


_SOURCES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _class_names_or_none(features) -> list[str] | None:
    try:
        return class_names(features)
    except ValueError:
        return None


def _batch_indices(n_rows, batch_size, shuffle, seed, epoch, drop_last, num_processes, process_index
                   ) -> list[np.ndarray]:
    """This process's row indices for each batch of one epoch: the same permutation on every process, each global
    batch of `batch_size * num_processes` rows cut into disjoint parts."""
    order = np.random.default_rng([seed, epoch]).permutation(n_rows) if shuffle else np.arange(n_rows)
    global_batch = batch_size * num_processes
    n_full = n_rows // global_batch
    batches = list(order[: n_full * global_batch].reshape(n_full, num_processes, batch_size)[:, process_index])
    rest = order[n_full * global_batch:]
    if len(rest) and not drop_last:
        part = np.array_split(rest, num_processes)[process_index]
        if len(part):
            batches.append(part)
    return batches


class EcgLoader:
    """Iterable over the batches of one epoch (`len()` for map-style datasets), prepared by `num_workers` threads.

    Map-style: the threads gather batches in order, `2 * num_workers` ahead. Streaming: each thread reads its own
    split of the stream and the batches are taken from the threads in turn, as torch's DataLoader does.
    """

    def __init__(self, source, batches: list[np.ndarray] | None, num_workers: int):
        self.source, self.batches, self.num_workers = source, batches, num_workers

    def __len__(self) -> int:
        if self.batches is None:
            raise TypeError("a streaming ECG loader has no length")
        return len(self.batches)

    def __iter__(self):
        if self.batches is None:
            if self.num_workers == 0:
                return self.source.iter_split(0, 1)
            return _round_robin([lambda w=w: self.source.iter_split(w, self.num_workers)
                                 for w in range(self.num_workers)])
        if self.num_workers == 0:
            return (self.source[indices] for indices in self.batches)
        return _ordered_map(self.source.__getitem__, self.batches, self.num_workers)


def _ordered_map(fn, items, num_threads: int):
    pool = ThreadPoolExecutor(num_threads, thread_name_prefix="ecg-loader")
    pending: deque = deque()
    items = iter(items)
    try:
        for item in itertools.islice(items, 2 * num_threads):
            pending.append(pool.submit(fn, item))
        while pending:
            result = pending.popleft().result()
            for item in itertools.islice(items, 1):
                pending.append(pool.submit(fn, item))
            yield result
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _round_robin(generators):
    """Runs each generator factory in its own thread; yields their items in turn until all are exhausted."""
    stop, done = threading.Event(), object()
    queues = [queue.Queue(maxsize=2) for _ in generators]

    def run(make, q):
        try:
            for item in make():
                while not stop.is_set():
                    try:
                        q.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            q.put(done)
        except BaseException as error:  # handed to the consumer, which re-raises it
            q.put(error)

    threads = [threading.Thread(target=run, args=(g, q), daemon=True) for g, q in zip(generators, queues, strict=True)]
    for t in threads:
        t.start()
    try:
        active = list(queues)
        while active:
            for q in list(active):
                item = q.get()
                if item is done:
                    active.remove(q)
                elif isinstance(item, BaseException):
                    raise item
                else:
                    yield item
    finally:
        stop.set()
        for q in queues:  # unblock producers waiting on a full queue
            while not q.empty():
                q.get_nowait()
        for t in threads:
            t.join()


class _BatchBuffers:
    """Reuses int16 batch buffers once no tensor or view refers to them (thread-safe).

    A fresh 30 MB buffer per batch costs one page fault per 4 KB page, which alone halves throughput. Up to `keep`
    buffers (2 x workers + 4) stay allocated while their dataset object lives, across epochs. The pool hands
    out a numpy array; the caller wraps it with `torch.from_numpy`, so every tensor or view made from it keeps the
    array's refcount up, and a buffer is handed out again only when the refcount shows none is left.
    """

    def __init__(self, pin_memory: bool, keep: int = 4):
        self.pin_memory, self.keep, self.pool, self.lock = pin_memory, keep, [], threading.Lock()

    def get(self, shape) -> np.ndarray:
        with self.lock:
            for _owner, array in self.pool:
                # 3 = the pool's tuple, the loop variable and getrefcount's argument: no tensor holds it any more
                if array.shape == shape and sys.getrefcount(array) == 3:
                    return array
            owner = torch.empty(shape, dtype=torch.int16, pin_memory=self.pin_memory)
            array = owner.numpy()
            self.pool = (self.pool + [(owner, array)])[-self.keep:]
            return array


class _ArrowBatches:
    """Map-style source: `self[indices]` is one batch gathered from the memory-mapped Arrow table."""

    def __init__(self, dataset: datasets.Dataset, names: list[str] | None, pin_memory: bool):
        table = dataset.data.table
        ecg = table.column("ecg")
        self.names = names
        self.ecg_views = [_ecg_values(chunk, len(chunk)) for chunk in ecg.chunks]
        self.chunk_starts = np.cumsum([0] + [len(c) for c in ecg.chunks])
        self.adc = _flat_values(table.column("adc_gain"), np.float32).reshape(len(table), -1)
        self.labels = None
        if names is not None:
            labels = table.column("labels").combine_chunks()
            self.labels = (labels.offsets.to_numpy(), labels.values.to_numpy())
        self.ids = table.column("id")
        # select()/shuffle()/filter() leave an indices mapping over the unchanged table
        self.mapping = None if dataset._indices is None else dataset._indices.column(0).to_numpy().astype(np.int64)
        self.buffers = _BatchBuffers(pin_memory)

    def __getitem__(self, indices) -> dict:
        rows = np.asarray(indices, dtype=np.int64)
        if self.mapping is not None:
            rows = self.mapping[rows]
        chunk = np.searchsorted(self.chunk_starts, rows, side="right") - 1
        local = rows - self.chunk_starts[chunk]
        ecg = self.buffers.get((len(rows), *ECG_SHAPE))
        for k, (c, i) in enumerate(zip(chunk.tolist(), local.tolist(), strict=True)):
            ecg[k] = self.ecg_views[c][i]
        batch = {
            "ecg": torch.from_numpy(ecg),
            "adc_gain": torch.from_numpy(self.adc[rows]),
            "id": self.ids.take(rows).to_pylist(),
        }
        if self.labels is not None:
            offsets, values = self.labels
            batch["labels"] = _multi_hot(offsets[rows], offsets[rows + 1], values, len(self.names))
        return batch


class _StreamingBatches:
    """Streaming source: `iter_split(w, W)` reads split w of W of this process's part of the stream.

    Rows are shuffled here, in numpy, through a buffer of `shuffle_buffer` rows: `IterableDataset.shuffle` turns every
    example into Python lists (60,000 ints per ECG) and manages a few rows per second.
    """

    def __init__(self, dataset, names, batch_size, drop_last, num_processes, process_index, start_batch,
                 shuffle_buffer, seed, pin_memory):
        self.dataset, self.names, self.batch_size, self.drop_last = dataset, names, batch_size, drop_last
        self.world, self.rank, self.start_batch = num_processes, process_index, start_batch
        self.shuffle_buffer, self.seed, self.pin_memory = shuffle_buffer, seed, pin_memory

    def iter_split(self, worker: int, n_workers: int):
        split, n_splits = self.rank * n_workers + worker, self.world * n_workers
        ds = self.dataset
        by_rows = n_splits > 1 and ds.num_shards % n_splits != 0
        if n_splits > 1 and not by_rows:  # whole shards per split: nothing is read twice
            ds = split_dataset_by_node(ds, rank=split, world_size=n_splits)
        pieces = self._pieces(ds, split, n_splits) if by_rows else self._pieces(ds, 0, 1)
        if self.shuffle_buffer:
            pieces = _buffer_shuffle(pieces, self.shuffle_buffer, np.random.default_rng([*self.seed, split]))
        # batches are taken from the workers in turn: this worker's j-th batch is the loader's (j*W + w)-th
        for j, batch in enumerate(_rebatch(pieces, self.batch_size, self.drop_last)):
            if j * n_workers + worker >= self.start_batch:
                yield {key: value.tolist() if key == "id" else self._tensor(value) for key, value in batch.items()}

    def _pieces(self, ds, offset: int, step: int):
        """Every `step`-th row from row `offset` on, as dicts of numpy arrays. (datasets' own row split takes the
        rows with `pa.Table.take`, which costs milliseconds per nested-list ECG.)"""
        seen = 0
        for table in ds.with_format("arrow").iter(self.batch_size):
            rows = slice((offset - seen) % step, None, step)
            seen += len(table)
            n = len(table)
            ecg = [_ecg_values(chunk, len(chunk)) for chunk in table.column("ecg").chunks]
            piece = {
                "ecg": (ecg[0] if len(ecg) == 1 else np.concatenate(ecg))[rows].copy(),
                "adc_gain": _flat_values(table.column("adc_gain"), np.float32).reshape(n, -1)[rows],
                "id": np.array(table.column("id").to_pylist(), dtype=object)[rows],
            }
            if self.names is not None:
                labels = table.column("labels").combine_chunks()
                offsets = labels.offsets.to_numpy()
                piece["labels"] = _multi_hot(offsets[:-1], offsets[1:], labels.values.to_numpy(), len(self.names)
                                             ).numpy()[rows]
            if len(piece["id"]):
                yield piece

    def _tensor(self, array: np.ndarray) -> torch.Tensor:
        tensor = torch.from_numpy(array)
        return tensor.pin_memory() if self.pin_memory else tensor


def _buffer_shuffle(pieces, size: int, rng: np.random.Generator):
    """Yields the rows of `pieces` (dicts of equal-length arrays) in random order through a buffer of `size` rows:
    once the buffer is full, each incoming row takes the slot of a random buffered row, which leaves."""
    buffer, filled = None, 0
    for piece in pieces:
        n = len(piece["id"])
        if buffer is None:
            size = max(size, n)
            buffer = {k: np.empty((size, *v.shape[1:]), v.dtype) for k, v in piece.items()}
        fill = min(n, size - filled)
        for k, v in buffer.items():
            v[filled: filled + fill] = piece[k][:fill]
        filled += fill
        if fill < n:
            slots = rng.choice(size, n - fill, replace=False)
            leaving = {k: v[slots] for k, v in buffer.items()}
            for k, v in buffer.items():
                v[slots] = piece[k][fill:]
            yield leaving
    if filled:
        order = rng.permutation(filled)
        yield {k: v[:filled][order] for k, v in buffer.items()}


def _rebatch(pieces, batch_size: int, drop_last: bool):
    """Regroups dicts of equal-length arrays into batches of exactly `batch_size` rows (the last may be short)."""
    pending, n_pending = [], 0
    for piece in pieces:
        pending.append(piece)
        n_pending += len(piece["id"])
        while n_pending >= batch_size:
            joined = pending[0] if len(pending) == 1 else {k: np.concatenate([p[k] for p in pending]) for k in piece}
            yield {k: v[:batch_size] for k, v in joined.items()}
            n_pending -= batch_size
            pending = [{k: v[batch_size:] for k, v in joined.items()}] if n_pending else []
    if n_pending and not drop_last:
        yield {k: np.concatenate([p[k] for p in pending]) for k in pending[0]}


def _ecg_values(chunk: pa.Array, n_rows: int) -> np.ndarray:
    """(n_rows, 12, 5000) int16 view of one chunk of the Array2D column (zero copy when the chunk has no nulls)."""
    storage = chunk.storage if isinstance(chunk, pa.ExtensionArray) else chunk
    flat = storage.flatten().flatten()
    if len(flat) != n_rows * ECG_SHAPE[0] * ECG_SHAPE[1] or flat.null_count:
        raise ValueError(f"column 'ecg': {n_rows} rows hold {len(flat)} samples with {flat.null_count} nulls; "
                         f"every row must be a full {ECG_SHAPE} int16 array")
    return flat.to_numpy(zero_copy_only=False).reshape(n_rows, *ECG_SHAPE)


def _flat_values(column: pa.ChunkedArray, dtype) -> np.ndarray:
    """Child values of a list column as one numpy array."""
    return np.concatenate([c.flatten().to_numpy(zero_copy_only=False) for c in column.chunks]).astype(dtype, copy=False)


def _multi_hot(starts: np.ndarray, ends: np.ndarray, values: np.ndarray, num_classes: int) -> torch.Tensor:
    """float32 (B, num_classes): row b has ones at values[starts[b]:ends[b]]."""
    lengths = ends - starts
    row = np.repeat(np.arange(len(starts)), lengths)
    # position of every label in `values`: each row's start plus its rank inside the row
    pos = np.repeat(starts - (np.cumsum(lengths) - lengths), lengths) + np.arange(lengths.sum())
    out = np.zeros((len(starts), num_classes), np.float32)
    out[row, values[pos]] = 1.0
    return torch.from_numpy(out)
