"""Crash safety with real processes: a writer killed with SIGKILL at random moments, mid-block and mid-commit.

After every kill the store opens, validates, keeps every episode committed before, and every committed episode
reads back bit-identical to what was written. At least 20 kills across this file.
"""

import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from store_checks import assert_episode_matches

from robot_rl.data import EpisodeStore, validate

WRITER = str(Path(__file__).parent / "crash_writer.py")


def _start(root: Path, mode: str, total: int) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, WRITER, str(root), mode, str(total)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    assert line.startswith("ready"), proc.stderr.read()
    return proc


def _check(root: Path, seen: int) -> int:
    """Open read-only, validate, compare every committed episode; returns the committed count."""
    reader = EpisodeStore.open(root)
    assert reader.num_episodes >= seen, "a committed episode was lost"
    validate(str(root))
    for i in range(reader.num_episodes):
        assert_episode_matches(reader, i)
    # opening for append recovers (drops what lies past the commit) and leaves a valid, identical store
    EpisodeStore.open(root, mode="a").close()
    validate(str(root))
    assert not list(root.rglob("*.partial"))
    return reader.num_episodes


def test_random_sigkills(tmp_path):
    root, rng, seen = tmp_path / "store", random.Random(7), 0
    for _ in range(10):
        proc = _start(root, "run", total=10_000)
        time.sleep(rng.uniform(0.05, 0.6))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        seen = _check(root, seen)
    assert seen > 0  # the writer did make progress between kills


@pytest.mark.parametrize("where, k", [
    ("data", 3), ("data", 17), ("data", 41), ("data", 90),  # mid-block: inside a data chunk write
    ("meta/episodes", 2), ("meta/episodes", 9),  # metadata rows written, commit not yet
    ("meta/episode_ends", 1), ("meta/episode_ends", 3), ("meta/episode_ends", 6),  # mid-commit
    ("meta/episode_ends", 12),
])
def test_sigkill_inside_a_write(tmp_path, where, k):
    root = tmp_path / "store"
    seen = 0
    for round_ in range(2):  # kill, recover, then kill again on the recovered store
        proc = _start(root, f"kill:{where}:{k}", total=10_000)
        proc.wait(timeout=120)
        assert proc.returncode == -signal.SIGKILL, proc.stderr.read()
        assert list(root.rglob("*.partial")), "the kill should leave a half-written temp file behind"
        seen = _check(root, seen)
        if round_ == 0:
            assert seen == (k - 1 if where == "meta/episode_ends" else seen)
