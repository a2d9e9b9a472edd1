"""Chunk inference in a child process, so a control loop never shares its interpreter with a diffusion policy.

The async chunk scheduler's thread worker keeps inference off the control step's critical path, but not off its
interpreter: a 30 ms denoising loop holds the GIL between torch ops and competes with the control thread for it
(measured in the actor: compute p99 14.5 ms with the thread worker). `InferenceProcess` loads the same checkpoint in
a child process (`main` below) and serves the scheduler's requests there: the operating system, not the GIL, then
shares the CPU, and `nice` can give the control process the core first.

Protocol on two pipes (no pickle): each message is a 4-byte little-endian header length, a JSON header, then the raw
bytes of the arrays the header lists as `[name, dtype, shape]`. Requests: `predict` (start step + observation
history), `reset` (seed of the sampling noise), `close`. Replies: `ready` (after loading and one warm-up inference),
`result` (start step, seconds, the chunk) or `error` (message). The child's sampling noise follows the same seeds as
an in-process `ChunkPolicy`, so a process-served scheduler executes the same actions as a thread-served one.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import queue
import struct
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from typing import IO, Any

import numpy as np

from robot_rl.errors import UserError
from robot_rl.scheduling import set_process_scheduling

_LENGTH = struct.Struct("<I")
# The child leaves a real-time parent's scheduling before its imports start threads (torch, BLAS), then runs `main`.
_CHILD = ("from robot_rl.scheduling import set_process_scheduling\n"
          "set_process_scheduling(realtime=0)\n"
          "from robot_rl.policies.inference_process import main\n"
          "main()\n")


@dataclass
class ChunkResult:
    """One finished inference: the chunk conditioned on the history of step `start`, or the error it raised."""

    start: int
    actions: np.ndarray | None
    error: BaseException | None
    seconds: float


def write_message(stream: IO[bytes], header: dict[str, Any], arrays: dict[str, np.ndarray] | None = None) -> None:
    arrays = {k: np.ascontiguousarray(v) for k, v in (arrays or {}).items()}
    header = {**header, "arrays": [[k, v.dtype.str, list(v.shape)] for k, v in arrays.items()]}
    encoded = json.dumps(header).encode()
    stream.write(_LENGTH.pack(len(encoded)) + encoded + b"".join(v.tobytes() for v in arrays.values()))
    stream.flush()


def read_message(stream: IO[bytes]) -> tuple[dict[str, Any], dict[str, np.ndarray]] | None:
    """The next message, or None at the end of the stream (the other side exited)."""
    prefix = stream.read(_LENGTH.size)
    if len(prefix) < _LENGTH.size:
        return None
    header = json.loads(_read_exactly(stream, _LENGTH.unpack(prefix)[0]))
    arrays = {}
    for name, dtype, shape in header.pop("arrays"):
        dt = np.dtype(dtype)
        count = int(np.prod(shape, dtype=np.int64))
        arrays[name] = np.frombuffer(bytearray(_read_exactly(stream, count * dt.itemsize)), dt).reshape(shape)
    return header, arrays


def _read_exactly(stream: IO[bytes], size: int) -> bytes:
    data = stream.read(size)
    if len(data) < size:
        raise EOFError(f"inference pipe closed mid-message ({len(data)} of {size} bytes)")
    return data


class InferenceProcess:
    """The scheduler's async worker, served by a child process: `submit(start, history)`, finished chunks on
    `results` (a queue of `ChunkResult`), `reset(seed)`, `close()`. A dead child puts an error on `results`."""

    def __init__(self, checkpoint: str, seed: int = 0, ddim_steps: int | None = None, threads: int = 1,
                 nice: int = 0, start_timeout_s: float = 180.0) -> None:
        request_r, request_w = os.pipe()
        reply_r, reply_w = os.pipe()
        command = [sys.executable, "-c", _CHILD, "--checkpoint", str(checkpoint), "--seed", str(seed),
                   "--threads", str(threads), "--nice", str(nice), "--requests", str(request_r),
                   "--replies", str(reply_w)]
        if ddim_steps is not None:
            command += ["--ddim-steps", str(ddim_steps)]
        self.process = subprocess.Popen(command, pass_fds=(request_r, reply_w), stdin=subprocess.DEVNULL)
        os.close(request_r)
        os.close(reply_w)
        self.requests = os.fdopen(request_w, "wb")
        self.replies = os.fdopen(reply_r, "rb")
        self.results: queue.Queue[ChunkResult] = queue.Queue()
        self._lock = threading.Lock()  # submit/reset/close may come from different threads
        self._closing = False
        self._await_ready(checkpoint, start_timeout_s)
        self.thread = threading.Thread(target=self._read_replies, name="chunk-inference-replies", daemon=True)
        self.thread.start()

    def _await_ready(self, checkpoint: str, timeout_s: float) -> None:
        ready: list[Any] = []
        reader = threading.Thread(target=lambda: ready.append(read_message(self.replies)), daemon=True)
        reader.start()
        reader.join(timeout_s)
        message = ready[0] if ready else None
        if message is None or message[0].get("op") != "ready":
            timed_out = reader.is_alive()
            self.process.kill()
            code = self.process.wait()
            if message is not None:
                why = message[0].get("message")
            else:
                why = f"no reply within {timeout_s:.0f} s" if timed_out else f"exit code {code}"
            raise UserError(f"chunk inference process for {checkpoint} did not start: {why} (see its stderr above)")

    def _read_replies(self) -> None:
        while True:
            try:
                message = read_message(self.replies)
            except (EOFError, ValueError, OSError) as exc:
                message, broken = None, exc
            else:
                broken = None
            if message is None:
                if not self._closing:
                    reason = broken or f"exit code {self.process.wait()}"
                    self.results.put(ChunkResult(-1, None, RuntimeError(f"chunk inference process died ({reason})"),
                                                 0.0))
                return
            header, arrays = message
            if header["op"] == "result":
                self.results.put(ChunkResult(int(header["start"]), arrays["actions"], None,
                                             float(header["seconds"])))
            else:
                self.results.put(ChunkResult(int(header.get("start", -1)), None, RuntimeError(header["message"]),
                                             0.0))

    def _send(self, header: dict[str, Any], arrays: dict[str, np.ndarray] | None = None) -> None:
        with self._lock:
            try:
                write_message(self.requests, header, arrays)
            except (BrokenPipeError, ValueError) as exc:  # the child is gone; the reply thread reports why
                if header["op"] != "close":
                    self.results.put(ChunkResult(header.get("start", -1), None,
                                                 RuntimeError(f"chunk inference process is gone ({exc})"), 0.0))

    def submit(self, start: int, history: dict[str, np.ndarray]) -> None:
        self._send({"op": "predict", "start": int(start)}, history)

    def reset(self, seed: int | None) -> None:
        """Restart the child's sampling noise, as `ChunkPolicy.reset(seed)` does in process."""
        self._send({"op": "reset", "seed": seed})

    @property
    def pid(self) -> int:
        return self.process.pid

    def close(self) -> None:
        self._closing = True
        self._send({"op": "close"})
        try:
            self.process.wait(timeout=5.0)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        with contextlib.suppress(OSError):  # a dead child leaves unflushed bytes behind
            self.requests.close()
        self.thread.join(timeout=5.0)
        self.replies.close()


def serve(checkpoint: str, seed: int, ddim_steps: int | None, threads: int, requests: IO[bytes],
          replies: IO[bytes]) -> None:
    """The child's loop: load, warm up, announce `ready`, then answer requests until `close` or end of input."""
    from robot_rl.policies.checkpoint import load_policy

    policy = load_policy(checkpoint, seed=seed, ddim_steps=ddim_steps)
    policy.threads = threads
    policy.warm_up()
    write_message(replies, {"op": "ready"})
    while (message := read_message(requests)) is not None:
        header, arrays = message
        if header["op"] == "close":
            return
        if header["op"] == "reset":
            policy.reset(header["seed"])
            continue
        began = time.perf_counter()
        try:
            actions = policy.predict(arrays)
        except Exception as exc:  # reported to the scheduler, which raises it on the control thread
            write_message(replies, {"op": "error", "start": header["start"], "message": f"{type(exc).__name__}: {exc}"})
            continue
        write_message(replies, {"op": "result", "start": header["start"],
                                "seconds": time.perf_counter() - began}, {"actions": actions})


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--ddim-steps", type=int, default=None)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--nice", type=int, default=0)
    parser.add_argument("--requests", type=int, required=True)
    parser.add_argument("--replies", type=int, required=True)
    args = parser.parse_args(argv)
    with contextlib.suppress(PermissionError):  # a real-time actor's priority is not for a 30 ms inference
        set_process_scheduling(args.nice, realtime=0)
    requests, replies = os.fdopen(args.requests, "rb"), os.fdopen(args.replies, "wb")
    try:
        serve(args.checkpoint, args.seed, args.ddim_steps, args.threads, requests, replies)
    except Exception as exc:  # loading failed: tell the parent why instead of dying silently
        write_message(replies, {"op": "error", "message": f"{type(exc).__name__}: {exc}"})
        raise SystemExit(1) from exc


if __name__ == "__main__":
    main()
