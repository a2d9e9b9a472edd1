"""Turning action chunks into one action per control step, without ever making the robot wait on inference.

Three modes:
- `open_loop`: infer a chunk, execute its first `n_action_steps` actions, infer the next one (inference happens
  inside the step that needs it: simple, but that step takes as long as one inference).
- `ensemble`: infer a chunk every step and average every chunk's prediction for the current step, weighted
  `exp(-decay * k)` with k = 0 for the oldest (ACT's temporal ensembling): smooth, one inference per step.
- `async`: a worker infers the next chunk while the current one executes. A chunk is aligned by step count:
  its index 0 is the step whose observation it was conditioned on, so when it arrives d steps later the scheduler
  continues at index d. The request is sent `latency` steps before the current chunk's `n_action_steps` run out
  (latency measured from the previous inferences); if a chunk is late, the current one keeps running past
  `n_action_steps`, and past its end the last action is held (`info["held"]`). Only the first step of an episode
  waits for an inference: there is nothing to execute before the first chunk.
  The worker is a thread (`inference="thread"`), or a child process serving the same checkpoint
  (`inference="process"`, `robot_rl.policies.inference_process`) so the inference never competes with the control
  step for this interpreter's GIL: what a live control loop uses.

Every step returns `(action, info)`; `info["chunk_id"]` (counting from 0 per episode) and `info["chunk_index"]` say
which chunk and which of its actions was executed: the residual learner and the recorder need both.
Every observation goes into the policy's history (`observe`) on the caller's thread, so the history always holds
consecutive steps; inference runs on a snapshot of it.
"""

from __future__ import annotations

import math
import queue
import threading
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from robot_rl.errors import UserError
from robot_rl.policies.inference_process import ChunkResult, InferenceProcess
from robot_rl.policies.policy import ChunkPolicy

MODES = ("open_loop", "ensemble", "async")


@dataclass
class _Chunk:
    actions: np.ndarray  # (H, action_dim)
    start: int  # the step whose observation it was conditioned on (= its index 0)
    chunk_id: int


INFERENCE = ("thread", "process")


class _InferenceWorker:
    """One daemon thread that runs `policy.predict` on submitted history snapshots, one at a time."""

    def __init__(self, policy: ChunkPolicy) -> None:
        self.policy = policy
        self.requests: queue.Queue = queue.Queue()
        self.results: queue.Queue = queue.Queue()
        self.thread = threading.Thread(target=self._run, name="chunk-inference", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while True:
            request = self.requests.get()
            if request is None:
                return
            start, history = request
            began = time.perf_counter()
            try:
                actions, error = self.policy.predict(history), None
            except BaseException as exc:  # handed to the control thread, which re-raises it
                actions, error = None, exc
            self.results.put(ChunkResult(start, actions, error, time.perf_counter() - began))

    def submit(self, start: int, history: dict[str, np.ndarray]) -> None:
        self.requests.put((start, history))

    def reset(self, seed: int | None) -> None:
        """Nothing to do: the thread shares the policy, whose `reset(seed)` already restarted the noise."""

    def close(self) -> None:
        self.requests.put(None)
        self.thread.join(timeout=5.0)


class ChunkScheduler:
    """Executes a chunked policy one control step at a time: `reset()`, then `step(obs) -> (action, info)`."""

    def __init__(self, policy: ChunkPolicy, mode: str = "open_loop", n_action_steps: int | None = None,
                 ensemble_decay: float = 0.01, inference: str = "thread", inference_nice: int = 0) -> None:
        if mode not in MODES:
            raise UserError(f"scheduler mode {mode!r} is unknown; choose one of: {', '.join(MODES)}")
        if inference not in INFERENCE:
            raise UserError(f"inference {inference!r} is unknown; choose one of: {', '.join(INFERENCE)}")
        self.policy = policy
        self.mode = mode
        self.horizon = policy.spec.horizon
        self.n_action_steps = policy.spec.n_action_steps if n_action_steps is None else int(n_action_steps)
        if not 1 <= self.n_action_steps <= self.horizon:
            raise UserError(f"n_action_steps={self.n_action_steps} must be in [1, horizon={self.horizon}]")
        self.ensemble_decay = ensemble_decay
        self.worker = self._worker(inference, inference_nice) if mode == "async" else None
        self.latency_steps = 1
        self.reset()

    def _worker(self, inference: str, nice: int) -> _InferenceWorker | InferenceProcess:
        if inference == "thread":
            return _InferenceWorker(self.policy)
        checkpoint = getattr(self.policy, "checkpoint", None)
        if checkpoint is None:
            raise UserError("inference=process serves a policy loaded from a checkpoint (load_policy); this one "
                            "has none: use inference=thread")
        return InferenceProcess(checkpoint, seed=self.policy.seed, ddim_steps=self.policy.ddim_steps or None,
                                threads=self.policy.threads, nice=nice)

    # ------------------------------------------------------------------ lifecycle
    def reset(self, seed: int | None = None) -> None:
        """Start a new episode: empty history, no chunk. Waits for (and drops) an inference still running for the
        last episode, so a chunk never crosses into the next one."""
        if self.worker is not None and getattr(self, "pending", None) is not None:
            self._wait_result()
        self.policy.reset(seed)
        if self.worker is not None:
            self.worker.reset(seed)
        self.t = 0
        self.chunk: _Chunk | None = None
        self.next_id = 0
        self.pending: int | None = None  # step of the in-flight async request
        self.recent: list[_Chunk] = []  # ensemble: chunks that still cover the current step

    def close(self) -> None:
        """Stop the worker (async mode)."""
        if self.worker is not None:
            self.worker.close()
            self.worker = None

    def __enter__(self) -> ChunkScheduler:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ stepping
    def step(self, obs: dict[str, np.ndarray]) -> tuple[np.ndarray, dict[str, Any]]:
        """The action for this control step (action_dim,) and {chunk_id, chunk_index, held}."""
        self.policy.observe(obs)
        if self.mode == "open_loop":
            action, info = self._step_open_loop()
        elif self.mode == "ensemble":
            action, info = self._step_ensemble()
        else:
            action, info = self._step_async()
        self.t += 1
        return action, info

    def _new_chunk(self, actions: np.ndarray, start: int) -> _Chunk:
        chunk = _Chunk(actions, start, self.next_id)
        self.next_id += 1
        return chunk

    def _infer_now(self) -> _Chunk:
        return self._new_chunk(self.policy.predict(self.policy.obs_history()), self.t)

    def _execute(self, chunk: _Chunk) -> tuple[np.ndarray, dict[str, Any]]:
        index = self.t - chunk.start
        held = index >= self.horizon
        index = min(index, self.horizon - 1)
        return chunk.actions[index].copy(), {"chunk_id": chunk.chunk_id, "chunk_index": index, "held": held}

    def _step_open_loop(self) -> tuple[np.ndarray, dict[str, Any]]:
        if self.chunk is None or self.t - self.chunk.start >= self.n_action_steps:
            self.chunk = self._infer_now()
        return self._execute(self.chunk)

    def _step_ensemble(self) -> tuple[np.ndarray, dict[str, Any]]:
        newest = self._infer_now()
        self.recent = [c for c in self.recent if self.t - c.start < self.horizon] + [newest]
        predictions = np.stack([c.actions[self.t - c.start] for c in self.recent])  # oldest first
        weights = np.exp(-self.ensemble_decay * np.arange(len(self.recent)))
        action = (weights[:, None] * predictions).sum(axis=0) / weights.sum()
        return action.astype(np.float32), {"chunk_id": newest.chunk_id, "chunk_index": 0, "held": False,
                                           "ensembled": len(self.recent)}

    def _step_async(self) -> tuple[np.ndarray, dict[str, Any]]:
        self._poll()
        if self.chunk is None:  # first step of the episode: nothing to execute until a chunk exists
            self._request()
            self._adopt(self._wait_result())
        index = self.t - self.chunk.start
        if self.pending is None and index >= self.n_action_steps - self.latency_steps:
            self._request()
        return self._execute(self.chunk)

    # ------------------------------------------------------------------ async plumbing
    def _request(self) -> None:
        self.pending = self.t
        self.worker.submit(self.t, self.policy.obs_history())

    def _poll(self) -> None:
        """Adopt a finished chunk if there is one; never waits."""
        while self.pending is not None:
            try:
                result = self.worker.results.get_nowait()
            except queue.Empty:
                return
            self._adopt(result)

    def _wait_result(self) -> ChunkResult:
        return self.worker.results.get()

    def _adopt(self, result: ChunkResult) -> None:
        self.pending = None
        if result.error is not None:
            raise result.error
        self.chunk = self._new_chunk(result.actions, result.start)
        # the next request goes out this many steps before the current chunk's n_action_steps run out
        elapsed = max(1, self.t - result.start)
        if self.policy.spec.rate_hz > 0 and self.t == result.start:  # adopted in the step that asked for it
            elapsed = max(1, math.ceil(result.seconds * self.policy.spec.rate_hz))
        self.latency_steps = min(elapsed, self.n_action_steps)
