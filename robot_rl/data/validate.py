"""Check every invariant of an episode store; the first violation is raised as a one-line UserError."""

from __future__ import annotations

import numpy as np

from robot_rl.data.schema import EPISODE_FIELDS, NULLABLE_KEYS, SOURCES
from robot_rl.data.store import EpisodeStore
from robot_rl.errors import UserError


def validate(root: str) -> dict:
    """Validate the committed part of the store at `root` (an interrupted commit past it is allowed: reopening for
    writing drops it). Returns a summary dict; raises UserError naming the first violation."""
    store = EpisodeStore.open(root, mode="r")
    n, steps = store.num_episodes, store.num_steps

    def fail(message: str) -> None:
        raise UserError(f"{root}: {message}")

    ends = store._array("meta/episode_ends")
    if ends.dtype != np.int64 or ends.ndim != 1:
        fail(f"meta/episode_ends must be 1-D int64, found {ends.ndim}-D {ends.dtype}")
    tail = ends[n:]
    if (tail != -1).any():  # past the commits there is only spare capacity (-1); a commit is one atomic write
        fail(f"meta/episode_ends entry {n + int(np.flatnonzero(tail != -1)[0])} is {int(tail[tail != -1][0])} "
             "after a non-increasing entry; ends must be strictly increasing")
    lengths = np.diff(np.concatenate([[0], store.episode_ends]))

    for key, spec in store.schema.items():
        try:
            array = store._array(f"data/{key}")
        except KeyError:
            fail(f"data/{key} is declared in the schema but missing")
        if array.dtype != spec.dtype or tuple(array.shape[1:]) != spec.shape:
            fail(f"data/{key} is {tuple(array.shape[1:])} {array.dtype}, the schema says {spec.shape} {spec.dtype}")
        if tuple(array.chunks[1:]) != spec.shape:
            fail(f"data/{key} is chunked {array.chunks}; arrays must be chunked on time only")
        if array.shape[0] < steps:
            fail(f"data/{key} has {array.shape[0]} steps but {steps} are committed")

    meta = {}
    for name, (dtype, _) in EPISODE_FIELDS.items():
        try:
            array = store._array(f"meta/episodes/{name}")
        except KeyError:
            fail(f"meta/episodes/{name} is missing")
        if (array.dtype.kind in "OTU") != (dtype == "str") or (dtype != "str" and array.dtype != np.dtype(dtype)):
            fail(f"meta/episodes/{name} has dtype {array.dtype}, expected {dtype}")
        if array.shape[0] < n:
            fail(f"meta/episodes/{name} has {array.shape[0]} rows for {n} committed episodes")
        meta[name] = array[:n]
    if n:
        if (meta["length"] != lengths).any():
            i = int(np.flatnonzero(meta["length"] != lengths)[0])
            fail(f"episode {i} records length {meta['length'][i]} but spans {lengths[i]} steps")
        bad = [s for s in meta["source"].tolist() if s not in SOURCES]
        if bad:
            fail(f"episode source {bad[0]!r} is not one of {', '.join(SOURCES)}")

    _check_steps(store, fail)
    return {"root": root, "episodes": n, "steps": steps, "valid": True}


def _check_steps(store: EpisodeStore, fail) -> None:
    """Finite floats (nullable keys: all-NaN rows allowed) and episode-end flags only on last steps."""
    last_step = np.zeros(store.num_steps, dtype=bool)
    if store.num_steps:
        last_step[store.episode_ends - 1] = True
    for key, spec in store.schema.items():
        if spec.dtype.kind != "f" and key not in ("terminated", "truncated"):
            continue
        block = max(store.chunks[key], 1) * max(1, 65536 // max(store.chunks[key], 1))
        for start in range(0, store.num_steps, block):
            stop = min(start + block, store.num_steps)
            values = store.read_steps(start, stop, [key])[key]
            if spec.dtype.kind == "f":
                flat = values.reshape(len(values), -1)
                finite = np.isfinite(flat)
                ok = finite.all(axis=1)
                if key in NULLABLE_KEYS:
                    ok |= np.isnan(flat).all(axis=1)
                if not ok.all():
                    fail(f"data/{key} step {start + int(np.flatnonzero(~ok)[0])} holds NaN or inf")
            else:
                early = values.astype(bool) & ~last_step[start:stop]
                if early.any():
                    fail(f"data/{key} is set at step {start + int(np.flatnonzero(early)[0])}, "
                         "which is not the last step of its episode")
