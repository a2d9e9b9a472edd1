"""The crash-safe episode store on zarr 3.

Layout (see ARCHITECTURE.md): `data/<key>` holds every step of every episode concatenated on axis 0 and chunked on
time only; `meta/episodes/<field>` holds one row per episode; `meta/episode_ends` (cumulative int64 ends) is the
commit record and is written last. The rules that make it crash-safe:

- one writer per store (an OS file lock for local roots, released by the kernel when the writer dies);
- steps are buffered and written in blocks aligned to each key's time chunks; a partial chunk at an episode boundary
  is rewritten whole, and LocalStore replaces a chunk file atomically (zarr >= 3.1.3), so committed bytes sharing a
  chunk with new ones are never at risk;
- arrays grow in capacity ahead of the data (a zarr resize rewrites metadata and costs milliseconds), so the
  committed length is `episode_ends[-1]`, never an array's shape; `episode_ends` is pre-grown with the fill value -1;
- an episode becomes visible only when its end is written into `meta/episode_ends`, after its data and metadata
  rows: one chunk write, atomic. Entries of -1 (or not increasing) are not commits;
- opening for append truncates every array to the committed length, so anything a crash left behind is dropped, and
  a clean close trims every array to its exact committed size.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import zarr
from zarr.core.sync import sync
from zarr.storage import FsspecStore, LocalStore

from robot_rl.data.schema import (
    EPISODE_FIELDS,
    FORMAT_NAME,
    FORMAT_VERSION,
    KeySpec,
    check_episode_fields,
    check_step,
    parse_schema,
    schema_to_json,
)
from robot_rl.errors import UserError

DEFAULT_CHUNK_BYTES = 8 << 20  # ~8 MiB per chunk: big sequential writes for images, small rewrites for scalars
MAX_CHUNK_STEPS = 1024  # small keys: a chunk rewritten at every episode end stays small
META_CHUNK = 256  # rows per chunk of episode metadata and episode_ends
_ARRAY_CONFIG = {"write_empty_chunks": True}  # skip zarr's scan of every chunk for the fill value (6x slower writes)
_REMOTE_WRITERS: set[str] = set()  # non-local roots: one writer per process-visible root


def _is_url(root: str) -> bool:
    return "://" in root and not root.startswith("file://")


def _zarr_store(root: str, read_only: bool):
    if _is_url(root):
        return FsspecStore.from_url(root, read_only=read_only)
    path = root[len("file://"):] if root.startswith("file://") else root
    return LocalStore(path, read_only=read_only)


def _time_chunk(spec: KeySpec, chunk_bytes: int) -> int:
    return int(np.clip(chunk_bytes // max(spec.step_bytes, 1), 1, MAX_CHUNK_STEPS))


def _committed_count(ends: np.ndarray, previous: int = 0) -> int:
    """Number of valid leading entries of episode_ends: positive and strictly increasing (after `previous`)."""
    steps = np.diff(np.concatenate([[previous], ends]))
    bad = np.flatnonzero(steps <= 0)
    return int(bad[0]) if bad.size else len(ends)


def _grown(have: int, need: int, chunk: int) -> int:
    """New capacity: at least double, whole chunks, so resizes stay rare."""
    need = max(need, 2 * have, 8 * chunk)
    return -(-need // chunk) * chunk


@dataclass
class _WriterLock:
    """Holds the single-writer lock of a root until released (or until the process dies)."""

    root: str
    handle: object | None = None

    def acquire(self) -> None:
        if _is_url(self.root):
            if self.root in _REMOTE_WRITERS:
                raise UserError(f"another writer is open on {self.root}; one writer per store, close it first")
            _REMOTE_WRITERS.add(self.root)
            self.handle = "remote"
            return
        path = Path(self.root.removeprefix("file://")) / ".writer.lock"
        handle = open(path, "a+")  # noqa: SIM115 - held for the writer's lifetime
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            handle.close()
            raise UserError(f"another writer (pid {holder}) has {self.root} open; one writer per store: "
                            "stop it or open this store with mode='r'") from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        self.handle = handle

    def release(self) -> None:
        if self.handle == "remote":
            _REMOTE_WRITERS.discard(self.root)
        elif self.handle is not None and not self.handle.closed:
            fcntl.flock(self.handle.fileno(), fcntl.LOCK_UN)
            self.handle.close()
        self.handle = None


class EpisodeStore:
    """An episode store on zarr 3. Create with `EpisodeStore.create`, open with `EpisodeStore.open`."""

    def __init__(self, root: str, group: zarr.Group, mode: str, lock: _WriterLock | None):
        self.root, self.mode, self._group, self._lock = root, mode, group, lock
        attrs = dict(group.attrs)
        self.schema: dict[str, KeySpec] = parse_schema(attrs["schema"])
        self.chunks: dict[str, int] = {key: int(n) for key, n in attrs["chunks"].items()}
        self.attrs = attrs
        self._meta_cache: dict[str, np.ndarray] = {}
        self._arrays: dict[str, zarr.Array] = {}
        self._writer: EpisodeWriter | None = None
        self.refresh()

    # ---------------------------------------------------------------- opening
    @classmethod
    def create(cls, root: str | Path, schema: dict, *, exist_ok: bool = False,
               chunk_bytes: int = DEFAULT_CHUNK_BYTES, compression: str | None = None,
               creator: str = "robot_rl") -> EpisodeStore:
        """Create a store with this schema and open it for writing (mode "a").

        With `exist_ok=True` an existing store with the same schema is opened instead; a different schema is an error.
        `compression="zstd"` compresses every key (smaller, slower); the default stores raw bytes.
        """
        root = str(root)
        specs = parse_schema(schema)
        if cls.exists(root):
            if not exist_ok:
                raise UserError(f"{root} already exists; open it with EpisodeStore.open(root, mode='a') "
                                "or choose a new path")
            return cls.open(root, mode="a", schema=schema)
        if not _is_url(root):
            Path(root.removeprefix("file://")).mkdir(parents=True, exist_ok=True)
        lock = _WriterLock(root)
        lock.acquire()
        try:
            group = zarr.open_group(_zarr_store(root, read_only=False), mode="a", zarr_format=3)
            compressors = _compressors(compression)
            chunks = {key: _time_chunk(spec, chunk_bytes) for key, spec in specs.items()}
            for key, spec in specs.items():
                group.create_array(f"data/{key}", shape=(0, *spec.shape), chunks=(chunks[key], *spec.shape),
                                   dtype=spec.dtype, fill_value=0, compressors=compressors, config=_ARRAY_CONFIG)
            for name, (dtype, _) in EPISODE_FIELDS.items():
                group.create_array(f"meta/episodes/{name}", shape=(0,), chunks=(META_CHUNK,),
                                   dtype=str if dtype == "str" else dtype, compressors=None, config=_ARRAY_CONFIG)
            group.create_array("meta/episode_ends", shape=(0,), chunks=(META_CHUNK,), dtype="int64",
                               fill_value=-1, compressors=None, config=_ARRAY_CONFIG)
            # Attributes last: a store without them is "not a robot_rl store", never a half-made one.
            group.attrs.update({"format": FORMAT_NAME, "version": FORMAT_VERSION, "creator": creator,
                                "schema": schema_to_json(specs), "chunks": chunks,
                                "compression": compression or "none"})
            return cls(root, group, "a", lock)
        except BaseException:
            lock.release()
            raise

    @classmethod
    def open(cls, root: str | Path, mode: str = "r", *, schema: dict | None = None) -> EpisodeStore:
        """Open an existing store: mode "r" (read committed episodes) or "a" (the one writer; recovers first)."""
        root = str(root)
        if mode not in ("r", "a"):
            raise UserError(f"mode must be 'r' or 'a', got {mode!r}")
        group = cls._open_group(root)
        if schema is not None:
            _check_same_schema(root, parse_schema(group.attrs["schema"]), parse_schema(schema))
        if mode == "r":
            return cls(root, group, "r", None)
        lock = _WriterLock(root)
        lock.acquire()
        try:
            group = zarr.open_group(_zarr_store(root, read_only=False), mode="r+")
            store = cls(root, group, "a", lock)
            store._truncate_to_commit()
            if not _is_url(root):  # temp files of writes a crash interrupted (zarr writes temp + rename)
                for partial in Path(root.removeprefix("file://")).rglob("*.partial"):
                    partial.unlink(missing_ok=True)
            return store
        except BaseException:
            lock.release()
            raise

    @staticmethod
    def exists(root: str | Path) -> bool:
        """Whether a store (or at least a zarr group) is at `root`."""
        root = str(root)
        if _is_url(root):
            try:
                zarr.open_group(_zarr_store(root, read_only=True), mode="r")
                return True
            except (FileNotFoundError, zarr.errors.GroupNotFoundError, KeyError):
                return False
        return (Path(root.removeprefix("file://")) / "zarr.json").exists()

    @classmethod
    def _open_group(cls, root: str) -> zarr.Group:
        not_store = (f"{root} is not a robot_rl episode store; create one with EpisodeStore.create "
                     "or `robot-rl collect ... out=ROOT`")
        if not _is_url(root) and not Path(root.removeprefix("file://")).exists():
            raise UserError(f"{root} does not exist; create a store with EpisodeStore.create or `robot-rl collect`")
        try:
            group = zarr.open_group(_zarr_store(root, read_only=True), mode="r")
        except Exception:
            raise UserError(not_store) from None
        attrs = dict(group.attrs)
        if attrs.get("format") != FORMAT_NAME or "schema" not in attrs or "chunks" not in attrs:
            raise UserError(not_store)
        if attrs.get("version") != FORMAT_VERSION:
            raise UserError(f"{root} has store format version {attrs.get('version')}; this robot_rl reads version "
                            f"{FORMAT_VERSION}: upgrade robot_rl")
        return group

    def close(self) -> None:
        """Release the store; a writer discards an unfinished episode and trims arrays to the committed size."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if self.mode == "a":
            self._truncate_to_commit()
        if self._lock is not None:
            self._lock.release()
            self._lock = None
        self.mode = "closed"

    def __enter__(self) -> EpisodeStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:
        lock = getattr(self, "_lock", None)
        if lock is not None:
            lock.release()

    # ---------------------------------------------------------------- reading
    def _array(self, path: str) -> zarr.Array:
        array = self._arrays.get(path)
        if array is None:  # the array config is per handle, not stored: set it on every handle we write through
            array = self._arrays[path] = self._group[path].with_config(_ARRAY_CONFIG)
        return array

    def refresh(self) -> int:
        """Pick up episodes committed since the last look (e.g. by a writer in another process). Returns how many."""
        before = getattr(self, "num_episodes", 0)
        if self.mode == "r":  # re-read metadata: another process may have grown the arrays
            self._group = zarr.open_group(_zarr_store(self.root, read_only=True), mode="r")
            self._arrays = {}
        known = getattr(self, "episode_ends", np.zeros(0, np.int64))
        fresh = self._array("meta/episode_ends")[len(known):]
        count = _committed_count(fresh, int(known[-1]) if len(known) else 0)
        self.episode_ends = np.concatenate([known, fresh[:count]]).astype(np.int64)
        self.num_episodes = len(self.episode_ends)
        self.num_steps = int(self.episode_ends[-1]) if self.num_episodes else 0
        return self.num_episodes - before

    @property
    def keys(self) -> list[str]:
        return list(self.schema)

    def episode_range(self, index: int) -> tuple[int, int]:
        if not -self.num_episodes <= index < self.num_episodes:
            raise IndexError(f"episode {index} out of range: the store has {self.num_episodes} committed episodes")
        index %= self.num_episodes
        start = int(self.episode_ends[index - 1]) if index else 0
        return start, int(self.episode_ends[index])

    def episode(self, index: int, keys: list[str] | None = None) -> dict[str, np.ndarray]:
        """All steps of committed episode `index`, as {key: array with steps on axis 0}."""
        start, end = self.episode_range(index)
        return self.read_steps(start, end, keys)

    def read_steps(self, start: int, stop: int, keys: list[str] | None = None) -> dict[str, np.ndarray]:
        """Committed steps [start, stop) of the concatenated step arrays (possibly spanning many episodes)."""
        if not 0 <= start <= stop <= self.num_steps:
            raise IndexError(f"steps [{start}, {stop}) out of the committed range [0, {self.num_steps})")
        keys = self.keys if keys is None else keys
        for key in keys:
            if key not in self.schema:
                raise UserError(f"store {self.root} has no key {key!r}; its keys are: {', '.join(self.schema)}")
        return {key: self._array(f"data/{key}")[start:stop] for key in keys}

    @property
    def meta(self) -> dict[str, np.ndarray]:
        """Per-episode fields of the committed episodes: {field: array with one row per episode}."""
        n = self.num_episodes
        for name in EPISODE_FIELDS:
            have = self._meta_cache.get(name)
            if have is None or len(have) < n:
                start = 0 if have is None else len(have)
                new = self._array(f"meta/episodes/{name}")[start:n]
                self._meta_cache[name] = new if have is None else np.concatenate([have, new])
            elif len(have) > n:
                self._meta_cache[name] = have[:n]
        return {name: self._meta_cache[name][:n] for name in EPISODE_FIELDS}

    def episode_meta(self, index: int) -> dict:
        self.episode_range(index)
        return {name: values[index].item() if hasattr(values[index], "item") else values[index]
                for name, values in self.meta.items()}

    # ---------------------------------------------------------------- writing
    def writer(self) -> EpisodeWriter:
        """The episode writer of this store: `with store.writer() as w: w.add_step(...); w.end_episode(...)`."""
        if self.mode != "a":
            raise UserError(f"{self.root} is open read-only; open it with EpisodeStore.open(root, mode='a') to write")
        if self._writer is None:
            self._writer = EpisodeWriter(self)
        return self._writer

    def _truncate_to_commit(self) -> None:
        """Drop anything past the last commit (data steps, metadata rows, spare episode_ends) and trim capacity."""
        n, steps = self.num_episodes, self.num_steps
        for key in self.schema:
            array = self._array(f"data/{key}")
            if array.shape[0] < steps:
                raise UserError(f"{self.root} is damaged: data/{key} has {array.shape[0]} steps but "
                                f"{steps} are committed; run `robot-rl data validate {self.root}`")
            if array.shape[0] != steps:
                array.resize((steps, *array.shape[1:]))
        for path in [f"meta/episodes/{name}" for name in EPISODE_FIELDS] + ["meta/episode_ends"]:
            array = self._array(path)
            if array.shape[0] > n:
                array.resize((n,))

    def _reserve(self, path: str, need: int) -> zarr.Array:
        """The array at `path`, grown so that it holds at least `need` rows."""
        array = self._array(path)
        if array.shape[0] < need:
            array.resize((_grown(array.shape[0], need, array.chunks[0]), *array.shape[1:]))
        return array


def _write_all(writes: list[tuple[zarr.Array, object, object]]) -> None:
    """Write several (array, selection, value) at once on zarr's event loop: one round trip, not one per key."""
    async def gather():
        await asyncio.gather(*(array._async_array.setitem(selection, value) for array, selection, value in writes))

    if writes:
        sync(gather())


def _compressors(compression: str | None):
    if compression in (None, "none"):
        return None
    if compression == "zstd":
        from zarr.codecs import ZstdCodec

        return (ZstdCodec(level=3),)
    raise UserError(f"unknown compression {compression!r}; use 'none' or 'zstd'")


def _check_same_schema(root: str, have: dict[str, KeySpec], want: dict[str, KeySpec]) -> None:
    for key in sorted(set(have) | set(want)):
        if have.get(key) != want.get(key):
            got = have.get(key)
            asked = want.get(key)
            raise UserError(f"schema mismatch on {root}: key {key!r} is "
                            f"{_describe(got)} in the store but {_describe(asked)} was asked for; "
                            "write to a new store or use the store's schema")


def _describe(spec: KeySpec | None) -> str:
    return "absent" if spec is None else f"{spec.shape} {spec.dtype}"


@dataclass
class _OpenChunk:
    """The chunk a key (or metadata field) is filling: its whole content, committed prefix included.

    Keeping the prefix in memory makes every write a whole-chunk write: zarr never has to read a chunk back to merge
    new rows into it, and the file replace stays atomic.
    """

    buffer: np.ndarray
    start: int  # global row of buffer[0]
    fill: int  # rows of buffer that hold data


class EpisodeWriter:
    """Buffers one episode at a time and commits it. Use through `store.writer()` as a context manager.

    Whole chunks are handed to one background I/O thread as they fill, so a control loop never waits on the disk.
    That thread runs writes in order and `end_episode` waits for it, so an episode's data and metadata rows are on
    disk before its commit. Leaving the `with` block mid-episode discards the episode.
    """

    def __init__(self, store: EpisodeStore):
        self.store = store
        self._io = ThreadPoolExecutor(max_workers=1, thread_name_prefix="episode-writer")
        self._pending: list[Future] = []
        self._load_open_chunks()

    def _load_open_chunks(self) -> None:
        """Read the committed prefix of every open chunk (steps, metadata rows, episode ends) into memory."""
        store = self.store
        steps, n = store.num_steps, store.num_episodes
        self._data = {}
        for key, spec in store.schema.items():
            chunk = store.chunks[key]
            start = steps // chunk * chunk
            buffer = np.zeros((chunk, *spec.shape), spec.dtype)
            buffer[:steps - start] = store._array(f"data/{key}")[start:steps]
            self._data[key] = _OpenChunk(buffer, start, steps - start)
        start = n // META_CHUNK * META_CHUNK
        self._meta = {}
        for name, (dtype, _) in EPISODE_FIELDS.items():
            buffer = np.full(META_CHUNK, "", object) if dtype == "str" else np.zeros(META_CHUNK, dtype)
            buffer[:n - start] = store.meta[name][start:n]
            self._meta[name] = _OpenChunk(buffer, start, n - start)
        ends = np.full(META_CHUNK, -1, np.int64)
        ends[:n - start] = store.episode_ends[start:n]
        self._ends = _OpenChunk(ends, start, n - start)
        self._steps = 0
        self._first_time = None

    @property
    def pending_steps(self) -> int:
        """Steps of the episode in progress (not yet committed)."""
        return self._steps

    def __enter__(self) -> EpisodeWriter:
        if self.store.mode != "a":
            raise UserError(f"{self.store.root} is closed or read-only; open it with mode='a' to write")
        return self

    def __exit__(self, *exc) -> None:
        if self._steps:
            self.discard()

    def add_step(self, step: dict) -> None:
        """Check and buffer one step. A bad step raises UserError and is not added; the episode stays usable."""
        if self.store.mode != "a":
            raise UserError(f"{self.store.root} is closed; reopen it with mode='a' to write")
        values = check_step(self.store.schema, step)
        if self._steps == 0:
            self._first_time = float(values["timestamp"]) if "timestamp" in values else time.time()
        for key, value in values.items():
            open_chunk = self._data[key]
            open_chunk.buffer[open_chunk.fill] = value
            open_chunk.fill += 1
            if open_chunk.fill == len(open_chunk.buffer):  # full: write it in the background, start the next one
                self._submit(self._write_chunks, [(f"data/{key}", open_chunk.start, open_chunk.buffer)])
                next_start = open_chunk.start + len(open_chunk.buffer)
                self._data[key] = _OpenChunk(np.zeros_like(open_chunk.buffer), next_start, 0)
        self._steps += 1

    def _submit(self, fn, *args) -> None:
        self._pending = [f for f in self._pending if not f.done() or f.exception() is not None]
        self._pending.append(self._io.submit(fn, *args))

    def _write_chunks(self, writes: list[tuple[str, int, np.ndarray]]) -> None:
        """Whole-chunk writes (path, first row, chunk content), all at once on zarr's event loop."""
        _write_all([(self.store._reserve(path, start + len(buffer)), slice(start, start + len(buffer)), buffer)
                    for path, start, buffer in writes])

    def _wait(self) -> None:
        """Wait for the I/O thread; re-raise its first failure (the episode is then not committed)."""
        pending, self._pending = self._pending, []
        errors = [f.exception() for f in pending if f.exception() is not None]  # .exception() waits
        if errors:
            raise errors[0]

    def end_episode(self, *, success: bool, source: str, **fields) -> int:
        """Write the rest of the episode and its metadata row, then commit it. Returns the episode index."""
        if self._steps == 0:
            raise UserError("end_episode called with no steps; add at least one step first")
        if fields.get("length") not in (None, self._steps):
            raise UserError(f"episode length is computed ({self._steps} steps); do not pass length={fields['length']}")
        fields = {**fields, "success": success, "source": source, "length": self._steps}
        if fields.get("started_at") is None:
            fields["started_at"] = self._first_time
        row = check_episode_fields(fields)
        store = self.store
        n, end = store.num_episodes, store.num_steps + self._steps
        if self._ends.fill == META_CHUNK:  # metadata chunks are full: open the next ones
            for name, open_chunk in self._meta.items():
                blank = np.full(META_CHUNK, "", object) if open_chunk.buffer.dtype == object else np.zeros_like(
                    open_chunk.buffer)
                self._meta[name] = _OpenChunk(blank, open_chunk.start + META_CHUNK, 0)
            self._ends = _OpenChunk(np.full(META_CHUNK, -1, np.int64), self._ends.start + META_CHUNK, 0)
        for name, value in row.items():
            self._meta[name].buffer[self._meta[name].fill] = value
        writes = [(f"data/{key}", c.start, c.buffer) for key, c in self._data.items() if c.fill and c.start < end]
        writes += [(f"meta/episodes/{name}", c.start, c.buffer) for name, c in self._meta.items()]
        self._ends.buffer[self._ends.fill] = end
        self._submit(self._write_chunks, writes)
        self._submit(self._write_chunks, [("meta/episode_ends", self._ends.start, self._ends.buffer)])  # the commit
        try:
            self._wait()
        except BaseException:
            self._ends.buffer[self._ends.fill] = -1
            self.discard()
            raise
        for open_chunk in self._meta.values():
            open_chunk.fill += 1
        self._ends.fill += 1
        store.episode_ends = np.append(store.episode_ends, np.int64(end))
        store.num_episodes, store.num_steps = n + 1, end
        self._steps, self._first_time = 0, None
        return n

    def discard(self) -> None:
        """Drop the episode in progress. Whatever of it reached the disk lies past the commit and gets overwritten."""
        try:
            self._wait()
        finally:
            if self._steps:
                self._load_open_chunks()

    def close(self) -> None:
        self.discard()
        self._io.shutdown(wait=True)
