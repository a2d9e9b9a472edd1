"""A reader in one process sees exactly the committed episodes while a writer in another keeps adding."""

import subprocess
import sys
import time
from pathlib import Path

from store_checks import assert_episode_matches

from robot_rl.data import EpisodeStore, ReplayCache

WRITER = str(Path(__file__).parent / "crash_writer.py")


def test_reader_follows_a_live_writer(tmp_path):
    root, total = tmp_path / "store", 40
    proc = subprocess.Popen([sys.executable, WRITER, str(root), "run", str(total)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout.readline().startswith("ready")
    reader = EpisodeStore.open(root)
    cache = ReplayCache.for_store(reader, capacity=100_000)
    counts, checked = [], 0
    while True:
        finished = proc.poll() is not None
        reader.refresh()
        counts.append(reader.num_episodes)
        for i in range(checked, reader.num_episodes):  # every newly visible episode is complete and exact
            assert_episode_matches(reader, i)
        checked = reader.num_episodes
        cache.sync(reader, refresh=False)
        assert cache.num_episodes == reader.num_episodes and cache.size == reader.num_steps
        if finished:
            break
        time.sleep(0.01)
    assert proc.returncode == 0, proc.stderr.read()
    assert counts == sorted(counts) and counts[-1] == total
    assert len(set(counts)) > 2, "the reader should have seen the store grow while the writer ran"
