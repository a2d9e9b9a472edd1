"""The safety filter: the last word on every command that reaches the robot, as a pure, clock-explicit class.

`hw.nodes.safety.SafetyNode` wires it to topics; everything it decides is decided here, with `now` passed in, so
the tests drive it step by step. Commands are absolute joint position targets in the robot's units, ordered as
`joint_names`. Rules, in the order they apply:

- Mux: the policy's command passes unless a person intervenes; while `/teleop/intervention` is on, only teleop
  commands pass (the policy's are dropped and counted).
- Bumpless takeover: at takeover start the robot's measured position is the anchor; the device's first command
  is its anchor; every teleop command acts as `robot_anchor + (device - device_anchor)` (`teleop_relative=True`),
  so the robot starts from where it is, not from wherever the device was.
- Bad input never passes: a command with the wrong length, NaN or inf is dropped and counted; so is a joint state
  that does not name every joint or is not finite (it does not feed the watchdog).
- Limits: the target is clipped to [position_lower, position_upper], then its change from the last command sent is
  clipped to +-max_delta per command (per control step); optionally the workspace check (a forward-kinematics
  callable giving points that must stay inside a box) rejects the command instead (the robot keeps the last
  target). Without kinematics there is no workspace check: joint limits remain.
- Watchdog (non-latching): observations older than `obs_timeout` or, under the policy, commands older than
  `cmd_timeout` put the filter in hold: it sends the last safe command (the last one it sent, else the measured
  position) at every tick, so a hold starts at most one control period after data goes stale. Fresh data resumes.
- Latched holds: an e-stop (`/robot_rl/estop` true or an "estop" episode event) or a teleop device that goes silent
  during a takeover (unplugged) hold until an explicit episode "start" event (refused while the e-stop input is on).
  "start" also ends any takeover, so the policy resumes only by that explicit event, and (with fresh observations)
  it forgets the last command: the robot may have been reset or moved between episodes, so the next command's rate
  limit (and any hold) starts from the measured position, not from where the previous episode left the target.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

INF = float("inf")


@dataclass(frozen=True)
class SafetyParams:
    joint_names: tuple[str, ...]  # order of every command vector; /joint_states are matched by name
    position_lower: tuple[float, ...]
    position_upper: tuple[float, ...]
    max_delta: tuple[float, ...]  # largest change of a joint target per command, robot units
    rate_hz: float = 50.0  # control rate: watchdog tick and the unit of the timeouts below
    stale_periods: float = 2.0  # observations / policy commands older than this many periods are stale
    teleop_stale_periods: float = 4.0  # a takeover without a teleop command for this long = device lost (latches)
    teleop_relative: bool = True  # bumpless takeover; False applies teleop targets as given (still rate limited)
    workspace_fk: str = ""  # "module:function", f(q) -> points (k, 3) or (3,); empty = no workspace check
    workspace_lower: tuple[float, ...] = (-INF, -INF, -INF)
    workspace_upper: tuple[float, ...] = (INF, INF, INF)
    status_period_s: float = 1.0  # how often the node republishes its status (it also does on every mode change)
    # Episode-event sources that start episodes on their own (the sim mirror's automatic resets): their `start` never
    # releases a latch (e-stop, lost teleop). Only a person's start does: the operator or the teleop's buttons.
    automatic_sources: tuple[str, ...] = ("sim_mirror",)

    def __post_init__(self) -> None:
        n = len(self.joint_names)
        for name in ("position_lower", "position_upper", "max_delta"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"safety: {name} has {len(getattr(self, name))} values for {n} joints")
        if n == 0 or any(lo >= hi for lo, hi in zip(self.position_lower, self.position_upper)):
            raise ValueError("safety: needs joints, and position_lower < position_upper for each")
        if any(d <= 0 for d in self.max_delta) or self.rate_hz <= 0 or self.stale_periods <= 0:
            raise ValueError("safety: max_delta, rate_hz and stale_periods must be positive")
        if len(self.workspace_lower) != 3 or len(self.workspace_upper) != 3:
            raise ValueError("safety: workspace_lower/upper are (x, y, z)")

    @property
    def period(self) -> float:
        return 1.0 / self.rate_hz


class SafetyFilter:
    """See the module docstring. Each `on_*`/`tick` returns the command to send now, or None to send nothing."""

    def __init__(self, params: SafetyParams, fk: Callable[[np.ndarray], np.ndarray] | None = None):
        self.p = params
        self.n = len(params.joint_names)
        self.lower = np.asarray(params.position_lower, dtype=np.float64)
        self.upper = np.asarray(params.position_upper, dtype=np.float64)
        self.max_delta = np.asarray(params.max_delta, dtype=np.float64)
        self.obs_timeout = params.stale_periods * params.period
        self.cmd_timeout = params.stale_periods * params.period
        self.teleop_timeout = params.teleop_stale_periods * params.period
        self.fk = fk
        self.box = (np.asarray(params.workspace_lower, dtype=np.float64),
                    np.asarray(params.workspace_upper, dtype=np.float64))
        self.counts: Counter[str] = Counter()
        self._index = {name: i for i, name in enumerate(params.joint_names)}
        self.q_meas: np.ndarray | None = None
        self.t_obs: float | None = None
        self.last_cmd: np.ndarray | None = None
        self.t_policy: float | None = None
        self.t_teleop: float | None = None
        self.t_takeover: float | None = None
        self.intervention = False
        self.anchor_robot: np.ndarray | None = None
        self.anchor_device: np.ndarray | None = None
        self.estop_input = False
        self.latch: str | None = None  # "estop" | "teleop_lost": cleared only by a "start" event
        self.hold_reason: str | None = None  # "obs_stale" | "cmd_stale": cleared by fresh data

    # -- state -----------------------------------------------------------------------------------------------------
    @property
    def mode(self) -> str:
        if self.latch or self.hold_reason:
            return "hold"
        if self.intervention:
            return "teleop"
        return "policy" if self.last_cmd is not None else "idle"

    def status(self) -> dict:
        return {"mode": self.mode, "reason": self.latch or self.hold_reason, "intervention": self.intervention,
                "estop": self.estop_input, "counts": dict(self.counts)}

    def _obs_fresh(self, now: float) -> bool:
        return self.t_obs is not None and now - self.t_obs <= self.obs_timeout

    # -- inputs ----------------------------------------------------------------------------------------------------
    def on_joint_state(self, names: Sequence[str], positions: Sequence[float], now: float) -> None:
        q = self._joint_positions(names, positions)
        if q is None:
            self.counts["malformed_joint_states"] += 1
            return
        self.q_meas, self.t_obs = q, now
        if self.hold_reason == "obs_stale":
            self.hold_reason = None  # fresh observations: the next command may pass again

    def on_policy_command(self, q: Sequence[float], now: float) -> np.ndarray | None:
        target = self._valid_command(q, "policy")
        if target is None:
            return None
        self.t_policy = now
        if self.latch:
            self.counts["dropped_while_latched"] += 1
            return None
        if self.intervention:
            self.counts["policy_overridden"] += 1
            return None
        return self._forward(target, "policy", now)

    def on_teleop_command(self, q: Sequence[float], now: float) -> np.ndarray | None:
        device = self._valid_command(q, "teleop")
        if device is None:
            return None
        if not self.intervention:
            self.counts["teleop_ignored"] += 1  # a device streaming while nobody intervenes
            return None
        self.t_teleop = now
        if self.latch:
            self.counts["dropped_while_latched"] += 1
            return None
        target = device
        if self.p.teleop_relative and self.anchor_robot is not None:
            if self.anchor_device is None:
                self.anchor_device = device
            target = self.anchor_robot + (device - self.anchor_device)
        return self._forward(target, "teleop", now)

    def on_intervention(self, on: bool, now: float) -> None:
        if on and not self.intervention:
            self.intervention, self.t_takeover, self.t_teleop = True, now, None
            self.anchor_robot = self.q_meas.copy() if self.q_meas is not None else (
                None if self.last_cmd is None else self.last_cmd.copy())
            self.anchor_device = None
            self.counts["takeovers"] += 1
        elif not on and self.intervention:
            self.intervention = False
            self.anchor_robot = self.anchor_device = None

    def on_estop(self, on: bool, now: float) -> np.ndarray | None:
        self.estop_input = on
        if on:
            return self._latch("estop")
        return None  # releasing the e-stop does not move the robot: a "start" event does

    def on_episode_event(self, event: str, now: float, source: str = "") -> np.ndarray | None:
        if event == "estop":
            return self._latch("estop")
        if event == "start":
            if self.estop_input:
                self.counts["start_refused_estop"] += 1
                return None
            if self.latch and source in self.p.automatic_sources:
                self.counts["start_refused_latched"] += 1  # a latch waits for a person, not an automatic reset
                return None
            self.latch = None
            if self._obs_fresh(now):  # a new episode may start elsewhere (a reset): limits count from the measured
                self.last_cmd = None  # pose; without fresh observations the hold keeps the last command
            self.on_intervention(False, now)
        return None

    def tick(self, now: float) -> np.ndarray | None:
        """The watchdog, once per control period."""
        if self.latch:
            return self._hold()
        if self.t_obs is None:
            return None  # nothing observed yet: nothing to hold
        if not self._obs_fresh(now):
            return self._enter_hold("obs_stale")
        if self.intervention:
            last = self.t_teleop if self.t_teleop is not None else self.t_takeover
            if now - last > self.teleop_timeout:
                return self._latch("teleop_lost")
        elif self.t_policy is not None and now - self.t_policy > self.cmd_timeout:
            return self._enter_hold("cmd_stale")
        if self.hold_reason:
            return self._hold()
        return None

    # -- internals -------------------------------------------------------------------------------------------------
    def _joint_positions(self, names: Sequence[str], positions: Sequence[float]) -> np.ndarray | None:
        positions = np.asarray(positions, dtype=np.float64)
        if len(names) == 0:
            q = positions if positions.shape == (self.n,) else None
        elif len(names) != len(positions):
            q = None
        else:
            lookup = {name: i for i, name in enumerate(names)}
            idx = [lookup.get(name) for name in self.p.joint_names]
            q = None if any(i is None for i in idx) else positions[idx]
        return q if q is not None and np.all(np.isfinite(q)) else None

    def _valid_command(self, q: Sequence[float], source: str) -> np.ndarray | None:
        q = np.asarray(q, dtype=np.float64).ravel()
        if q.shape != (self.n,):
            self.counts[f"{source}_wrong_length"] += 1
            return None
        if not np.all(np.isfinite(q)):
            self.counts[f"{source}_nonfinite"] += 1
            return None
        return q

    def _forward(self, target: np.ndarray, source: str, now: float) -> np.ndarray | None:
        if not self._obs_fresh(now):
            self.counts[f"{source}_stale_obs"] += 1
            return self._enter_hold("obs_stale")
        clipped = np.clip(target, self.lower, self.upper)
        if np.any(clipped != target):
            self.counts["clipped_position"] += 1
        base = self.last_cmd if self.last_cmd is not None else self.q_meas
        step = np.clip(clipped - base, -self.max_delta, self.max_delta)
        if np.any(step != clipped - base):
            self.counts["clipped_delta"] += 1
        out = np.clip(base + step, self.lower, self.upper)  # base may be a measured position just outside
        if self.fk is not None and not self._in_workspace(out):
            self.counts["rejected_workspace"] += 1
            return None
        self.hold_reason = None
        self.last_cmd = out
        self.counts[f"forwarded_{source}"] += 1
        return out.copy()

    def _in_workspace(self, q: np.ndarray) -> bool:
        points = np.atleast_2d(np.asarray(self.fk(q), dtype=np.float64))
        return bool(np.all((points >= self.box[0]) & (points <= self.box[1])))

    def _hold(self) -> np.ndarray | None:
        target = self.last_cmd if self.last_cmd is not None else self.q_meas
        if target is None:
            return None
        self.last_cmd = target
        self.counts["hold_commands"] += 1
        return target.copy()

    def _enter_hold(self, reason: str) -> np.ndarray | None:
        if self.hold_reason != reason:
            self.counts[f"hold_{reason}"] += 1
            self.hold_reason = reason
        return self._hold()

    def _latch(self, reason: str) -> np.ndarray | None:
        if self.latch != reason:
            self.counts[f"latched_{reason}"] += 1
        if self.latch is None or reason == "estop":
            self.latch = reason
        return self._hold()
