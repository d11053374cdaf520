"""Fast ECG batches from datasets in the project's schema (DESIGN.md, "The datasets").

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
the Array2D column's flat int16 child values are viewed as numpy (no copy) and each row is copied once into the
batch buffer; labels become multi-hot with one vectorised scatter.

Distributed runs: pass `num_processes` / `process_index` (e.g. from `accelerator`) and do NOT pass the loader
through `accelerator.prepare`. Map-style datasets draw one permutation per (seed, epoch), identical on every process;
each global batch of `batch_size * num_processes` rows is cut into disjoint per-process parts, so every process
runs the same number of steps. Streaming datasets are split with `datasets.distributed.split_dataset_by_node` over
processes x workers (whole shards when their count divides evenly, else every n-th example).

Resuming: `start_batch` skips the first batches of the epoch (map-style: without reading them).
"""

from __future__ import annotations

import os
import sys
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
            "pre-training and zero-shot evaluation need labelled data: build it with builders/ (DESIGN.md schema)"
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
) -> torch.utils.data.DataLoader:
    """A DataLoader of dicts: `ecg` int16 (B, 12, 5000), `adc_gain` float32 (B, 12), `labels` float32 (B, Q), `id`.

    Args:
        batch_size: per-process batch size.
        shuffle: permute the rows with `seed` and `epoch` (streaming: shard order + a `shuffle_buffer` of rows).
        epoch: selects the permutation, so every epoch differs and a resumed run repeats it exactly.
        start_batch: skip this many batches of the epoch (resume).
        drop_last: drop the incomplete last batch; defaults to `shuffle` (training). Without it the last global
            batch is split as evenly as possible over the processes (their union is every row once).
        num_processes, process_index: this process's share of the data (e.g. `accelerator.num_processes`,
            `accelerator.process_index`).
        pin_memory: defaults to `torch.cuda.is_available()`.
    """
    drop_last = shuffle if drop_last is None else drop_last
    pin_memory = torch.cuda.is_available() if pin_memory is None else pin_memory
    if not 0 <= process_index < num_processes:
        raise ValueError(f"process_index={process_index} must be in [0, num_processes={num_processes})")
    names = _class_names_or_none(dataset.features)
    loader_kwargs = dict(batch_size=None, num_workers=num_workers, pin_memory=pin_memory)
    if num_workers > 0:
        loader_kwargs.update(persistent_workers=False, prefetch_factor=2)
    if isinstance(dataset, datasets.IterableDataset):
        dataset.set_epoch(epoch)  # datasets reshuffles the shard order for every epoch > 0
        source = _StreamingBatches(dataset, names, batch_size, drop_last, num_processes, process_index, start_batch,
                                   shuffle_buffer if shuffle else 0, (seed, epoch))
        return torch.utils.data.DataLoader(source, **loader_kwargs)
    sampler = _BatchIndices(len(dataset), batch_size, shuffle, seed, epoch, drop_last, num_processes, process_index,
                            start_batch)
    return torch.utils.data.DataLoader(_ArrowBatches(dataset, names), sampler=sampler, **loader_kwargs)


def _class_names_or_none(features) -> list[str] | None:
    try:
        return class_names(features)
    except ValueError:
        return None


class _BatchIndices(torch.utils.data.Sampler):
    """Yields this process's row indices (int64 array) for each batch of one epoch."""

    def __init__(self, n_rows, batch_size, shuffle, seed, epoch, drop_last, num_processes, process_index,
                 start_batch):
        self.n_rows, self.batch_size, self.shuffle, self.seed, self.epoch = n_rows, batch_size, shuffle, seed, epoch
        self.drop_last, self.world, self.rank, self.start_batch = drop_last, num_processes, process_index, start_batch

    def _batches(self) -> list[np.ndarray]:
        order = (np.random.default_rng([self.seed, self.epoch]).permutation(self.n_rows) if self.shuffle
                 else np.arange(self.n_rows))
        global_batch = self.batch_size * self.world
        n_full = self.n_rows // global_batch
        full = order[: n_full * global_batch].reshape(n_full, self.world, self.batch_size)[:, self.rank]
        batches = list(full)
        rest = order[n_full * global_batch:]
        if len(rest) and not self.drop_last:
            part = np.array_split(rest, self.world)[self.rank]
            if len(part):
                batches.append(part)
        return batches[self.start_batch:]

    def __iter__(self):
        return iter(self._batches())

    def __len__(self):
        return len(self._batches())


class _BatchBuffers:
    """Reuses int16 batch buffers once no tensor or view refers to them.

    A fresh 30 MB buffer per batch costs one page fault per 4 KB page, which alone halves throughput; a buffer is
    handed out again only when its refcount shows that the caller has dropped every tensor made from it.
    """

    def __init__(self, keep: int = 4):
        self.keep, self.free_list = keep, []

    def get(self, shape) -> np.ndarray:
        for buf in self.free_list:
            # 3 = the list, the loop variable and getrefcount's argument: no tensor holds it any more
            if buf.shape == shape and sys.getrefcount(buf) == 3:
                return buf
        buf = np.empty(shape, np.int16)
        if len(self.free_list) < self.keep:
            self.free_list.append(buf)
        else:
            self.free_list = self.free_list[1:] + [buf]
        return buf


class _ArrowBatches(torch.utils.data.Dataset):
    """Map-style source: `self[indices]` is one batch gathered from the memory-mapped Arrow table."""

    def __init__(self, dataset: datasets.Dataset, names: list[str] | None):
        self.dataset, self.names = dataset, names
        self._columns = None

    def __getstate__(self):  # workers rebuild the numpy views over their own memory map
        return {"dataset": self.dataset, "names": self.names, "_columns": None}

    def __len__(self):
        return len(self.dataset)

    def _load_columns(self):
        table = self.dataset.data.table
        ecg = table.column("ecg")
        ecg_views = [_ecg_values(chunk, len(chunk)) for chunk in ecg.chunks]
        chunk_starts = np.cumsum([0] + [len(c) for c in ecg.chunks])
        adc = _flat_values(table.column("adc_gain"), np.float32).reshape(len(table), -1)
        labels = None
        if self.names is not None and "labels" in table.column_names:
            labels = table.column("labels").combine_chunks()
            labels = (labels.offsets.to_numpy(), labels.values.to_numpy())
        # select()/shuffle()/filter() leave an indices mapping over the unchanged table
        mapping = None if self.dataset._indices is None else self.dataset._indices.column(0).to_numpy().astype(np.int64)
        self._columns = dict(ecg_views=ecg_views, chunk_starts=chunk_starts, adc=adc, labels=labels,
                             ids=table.column("id"), mapping=mapping, buffers=_BatchBuffers())

    def __getitem__(self, indices) -> dict:
        if self._columns is None:
            self._load_columns()
        cols = self._columns
        rows = np.asarray(indices, dtype=np.int64)
        if cols["mapping"] is not None:
            rows = cols["mapping"][rows]
        chunk = np.searchsorted(cols["chunk_starts"], rows, side="right") - 1
        local = rows - cols["chunk_starts"][chunk]
        ecg = cols["buffers"].get((len(rows), *ECG_SHAPE))
        views = cols["ecg_views"]
        for k, (c, i) in enumerate(zip(chunk.tolist(), local.tolist(), strict=True)):
            ecg[k] = views[c][i]
        batch = {
            "ecg": torch.from_numpy(ecg),
            "adc_gain": torch.from_numpy(cols["adc"][rows]),
            "id": cols["ids"].take(rows).to_pylist(),
        }
        if cols["labels"] is not None:
            offsets, values = cols["labels"]
            batch["labels"] = _multi_hot(offsets[rows], offsets[rows + 1], values, len(self.names))
        return batch


class _StreamingBatches(torch.utils.data.IterableDataset):
    """Streaming source: each DataLoader worker of each process reads its own split of the stream.

    Rows are shuffled here, in numpy, through a buffer of `shuffle_buffer` rows: `IterableDataset.shuffle` turns every
    example into Python lists (60,000 ints per ECG) and manages a few rows per second.
    """

    def __init__(self, dataset, names, batch_size, drop_last, num_processes, process_index, start_batch,
                 shuffle_buffer, seed):
        self.dataset, self.names, self.batch_size, self.drop_last = dataset, names, batch_size, drop_last
        self.world, self.rank, self.start_batch = num_processes, process_index, start_batch
        self.shuffle_buffer, self.seed = shuffle_buffer, seed

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        n_workers, worker = (1, 0) if info is None else (info.num_workers, info.id)
        split = self.rank * n_workers + worker
        ds = self.dataset
        if self.world * n_workers > 1:
            ds = split_dataset_by_node(ds, rank=split, world_size=self.world * n_workers)
        pieces = (self._columns(table) for table in ds.with_format("arrow").iter(self.batch_size))
        if self.shuffle_buffer:
            pieces = _buffer_shuffle(pieces, self.shuffle_buffer, np.random.default_rng([*self.seed, split]))
        # DataLoader takes batches from its workers in turn: this worker's j-th batch is the loader's (j*W + w)-th
        for j, batch in enumerate(_rebatch(pieces, self.batch_size, self.drop_last)):
            if j * n_workers + worker >= self.start_batch:
                yield {key: value.tolist() if key == "id" else torch.from_numpy(value) for key, value in batch.items()}

    def _columns(self, table: pa.Table) -> dict[str, np.ndarray]:
        n = len(table)
        columns = {
            "ecg": np.concatenate([_ecg_values(chunk, len(chunk)) for chunk in table.column("ecg").chunks]),
            "adc_gain": _flat_values(table.column("adc_gain"), np.float32).reshape(n, -1),
            "id": np.array(table.column("id").to_pylist(), dtype=object),
        }
        if self.names is not None and "labels" in table.column_names:
            labels = table.column("labels").combine_chunks()
            offsets = labels.offsets.to_numpy()
            columns["labels"] = _multi_hot(offsets[:-1], offsets[1:], labels.values.to_numpy(), len(self.names)).numpy()
        return columns


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
            joined = {k: np.concatenate([p[k] for p in pending]) for k in pending[0]}
            yield {k: v[:batch_size] for k, v in joined.items()}
            rest = {k: v[batch_size:] for k, v in joined.items()}
            n_pending -= batch_size
            pending = [rest] if n_pending else []
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
