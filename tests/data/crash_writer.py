"""Child process for the crash tests: writes deterministic episodes into a store until it is killed.

`python crash_writer.py ROOT MODE N` where MODE is `run` (the parent kills it at a random moment) or
`kill:<where>:<k>`: the process SIGKILLs itself in the middle of its k-th file write under <where>
(`data`, `meta/episodes`, `meta/episode_ends`), after half of the bytes reached the temp file.
"""

from __future__ import annotations

import os
import signal
import sys

import numpy as np

SCHEMA = {
    "obs/state": ((6,), "float32"),
    "obs/image_wrist": ((12, 12, 3), "uint8"),
    "action": ((3,), "float32"),
    "human_action": ((3,), "float32"),
    "intervention": ((), "bool"),
    "reward": ((), "float32"),
    "terminated": ((), "bool"),
    "truncated": ((), "bool"),
    "timestamp": ((), "float64"),
}
CHUNK_BYTES = 2048  # tiny chunks: episodes span many chunk boundaries, so kills land mid-block often


def make_episode(index: int) -> tuple[list[dict], dict]:
    """The steps and episode fields of episode `index`: the same in the writer and the checking parent."""
    rng = np.random.default_rng(1000 + index)
    length = int(rng.integers(3, 60))
    steps = []
    for t in range(length):
        human = rng.random() < 0.2
        steps.append({
            "obs/state": rng.standard_normal(6).astype(np.float32),
            "obs/image_wrist": rng.integers(0, 256, (12, 12, 3), dtype=np.uint8),
            "action": rng.uniform(-1, 1, 3).astype(np.float32),
            "human_action": rng.uniform(-1, 1, 3).astype(np.float32) if human else np.full(3, np.nan, np.float32),
            "intervention": human,
            "reward": np.float32(t == length - 1),
            "terminated": t == length - 1,
            "truncated": False,
            "timestamp": 1.7e9 + index * 100 + t * 0.05,
        })
    fields = {"success": bool(index % 3), "source": ("scripted", "teleop", "policy")[index % 3],
              "task": "Crash", "policy_id": f"p{index}"}
    return steps, fields


def _install_kill(where: str, k: int) -> None:
    """Die in the middle of the k-th chunk-file write under `where` (half the bytes in a temp file)."""
    from zarr.storage import _local

    original, count = _local._put, [0]

    def put(path, value, exclusive=False):
        name = str(path).replace(os.sep, "/")
        if f"/{where}/" in name and "/c/" in name:  # chunk files only, not array metadata
            count[0] += 1
            if count[0] == k:
                data = bytes(value.as_buffer_like())
                path.parent.mkdir(parents=True, exist_ok=True)
                with open(str(path) + ".killed.partial", "wb") as f:
                    f.write(data[: len(data) // 2])
                    f.flush()
                os.kill(os.getpid(), signal.SIGKILL)
        return original(path, value, exclusive)

    _local._put = put


def main() -> None:
    from robot_rl.data import EpisodeStore

    root, mode, total = sys.argv[1], sys.argv[2], int(sys.argv[3])
    if mode.startswith("kill:"):
        _, where, k = mode.split(":")
        _install_kill(where, int(k))
    store = EpisodeStore.create(root, SCHEMA, exist_ok=True, chunk_bytes=CHUNK_BYTES)
    print(f"ready {store.num_episodes}", flush=True)
    with store.writer() as writer:
        for index in range(store.num_episodes, total):
            steps, fields = make_episode(index)
            for step in steps:
                writer.add_step(step)
            writer.end_episode(**fields)
    store.close()


if __name__ == "__main__":
    main()
