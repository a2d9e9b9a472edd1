"""Teleop input devices read straight from Linux device files, without drivers or extra packages.

Each device turns the bytes it reads into a `DeviceInput`: axes in [-1, 1] (jog directions), the names of the
buttons held, and whether the device is still there. Reading is non-blocking (the teleop node polls at its control
rate); a device that disappears (unplugged: `ENODEV`, or end of file on a pipe) reports `connected=False` from then
on. Parsing is separate from reading (`feed(bytes)`), so recorded or synthetic input exercises the same code.

- `GamepadDevice`: evdev (`/dev/input/eventN`): 24-byte `input_event` records; EV_ABS sticks scaled by `axis_range`,
  EV_KEY buttons by their kernel names (BTN_SOUTH, BTN_START, ...).
- `SpaceMouseDevice`: 3Dconnexion-style HID reports on `/dev/hidrawN`: report 1 = translation (3 x int16, or all
  six axes in one 13-byte report on newer devices: `six_axis`), report 2 = rotation (3 x int16), report 3 = buttons.
- `KeyboardDevice`: characters from a terminal (stdin in cbreak mode) or any byte stream: key pairs jog one joint
  each way for one tick (auto-repeat keeps a held key jogging), other keys are buttons (episode events).
"""

from __future__ import annotations

import errno
import os
import struct
from dataclasses import dataclass

import numpy as np

EVENT = struct.Struct("=qqHHi")  # struct input_event on 64-bit Linux: timeval (2 x long), type, code, value
EV_KEY, EV_ABS = 0x01, 0x03
# Standard gamepad axes in the order they drive joints by default: left stick x/y, right stick x/y, triggers.
GAMEPAD_AXES = (0x00, 0x01, 0x03, 0x04, 0x02, 0x05)  # ABS_X, ABS_Y, ABS_RX, ABS_RY, ABS_Z, ABS_RZ
BUTTON_NAMES = {0x130: "BTN_SOUTH", 0x131: "BTN_EAST", 0x133: "BTN_NORTH", 0x134: "BTN_WEST", 0x136: "BTN_TL",
                0x137: "BTN_TR", 0x13A: "BTN_SELECT", 0x13B: "BTN_START", 0x13C: "BTN_MODE"}
SPACEMOUSE_FULL_SCALE = 350.0  # typical raw deflection of a 3Dconnexion device
KEYBOARD_JOG = "qawsedrftgyh"  # pairs (+, -) for joints 0..5
KEYBOARD_BUTTONS = {"1": "KEY_1", "2": "KEY_2", "3": "KEY_3", "0": "KEY_0", " ": "KEY_SPACE"}


@dataclass(frozen=True)
class DeviceInput:
    axes: np.ndarray  # each in [-1, 1]
    buttons: frozenset[str]
    connected: bool


def gamepad_events(data: bytes) -> list[tuple[int, int, int]]:
    """(type, code, value) of every whole input_event record in `data`."""
    usable = len(data) - len(data) % EVENT.size
    return [(t, c, v) for _, _, t, c, v in EVENT.iter_unpack(data[:usable])]


def gamepad_record(ev_type: int, code: int, value: int) -> bytes:
    """One input_event record (for recordings and tests)."""
    return EVENT.pack(0, 0, ev_type, code, value)


class StreamDevice:
    """Non-blocking reads from a device file; subclasses parse with `feed` and describe the state in `state`."""

    def __init__(self, path: str | int, num_axes: int):
        self.axes = np.zeros(num_axes)
        self.buttons: set[str] = set()
        self.connected = True
        self._buffer = b""
        self._fd = path if isinstance(path, int) else os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        os.set_blocking(self._fd, False)

    def poll(self) -> DeviceInput:
        while self.connected:
            try:
                chunk = os.read(self._fd, 4096)
            except BlockingIOError:
                break
            except OSError as exc:
                if exc.errno not in (errno.ENODEV, errno.EIO, errno.EBADF):
                    raise
                chunk = b""
            if not chunk:
                self.connected = False  # unplugged (ENODEV) or the writing end is gone (EOF)
                self.axes[:] = 0.0
                self.buttons.clear()
                break
            self._buffer = self.feed(self._buffer + chunk)
        return self.state()

    def feed(self, data: bytes) -> bytes:
        """Apply every whole record in `data`; return the incomplete rest."""
        raise NotImplementedError

    def state(self) -> DeviceInput:
        return DeviceInput(np.clip(self.axes, -1.0, 1.0), frozenset(self.buttons), self.connected)

    def close(self) -> None:
        if self._fd > 2:
            os.close(self._fd)


class GamepadDevice(StreamDevice):
    def __init__(self, path: str | int, axis_range: float = 32767.0, axis_codes: tuple[int, ...] = GAMEPAD_AXES):
        super().__init__(path, len(axis_codes))
        self.axis_range = axis_range
        self.axis_index = {code: i for i, code in enumerate(axis_codes)}

    def feed(self, data: bytes) -> bytes:
        for ev_type, code, value in gamepad_events(data):
            if ev_type == EV_ABS and code in self.axis_index:
                self.axes[self.axis_index[code]] = value / self.axis_range
            elif ev_type == EV_KEY:
                name = BUTTON_NAMES.get(code, f"BTN_{code:#x}")
                (self.buttons.add if value else self.buttons.discard)(name)
        return data[len(data) - len(data) % EVENT.size:]


class SpaceMouseDevice(StreamDevice):
    """`six_axis=True` for devices whose report 1 carries all six axes (SpaceMouse Wireless, Compact)."""

    def __init__(self, path: str | int, full_scale: float = SPACEMOUSE_FULL_SCALE, six_axis: bool = False):
        super().__init__(path, 6)
        self.full_scale = full_scale
        self.sizes = {1: 13 if six_axis else 7, 2: 7, 3: 3}

    def feed(self, data: bytes) -> bytes:
        while data:
            report = data[0]
            size = self.sizes.get(report)
            if size is None:  # unknown report: resynchronize on the next byte
                data = data[1:]
                continue
            if len(data) < size:
                return data
            body, data = data[1:size], data[size:]
            if report == 3:
                bits = int.from_bytes(body, "little")
                self.buttons = {f"BUTTON_{i}" for i in range(16) if bits >> i & 1}
                continue
            values = np.array(struct.unpack(f"<{len(body) // 2}h", body)) / self.full_scale
            start = 3 if report == 2 else 0
            self.axes[start:start + len(values)] = values
        return b""


class KeyboardDevice(StreamDevice):
    """Each jog key deflects its joint's axis fully for the tick it arrived in; the others are momentary buttons."""

    def __init__(self, path: str | int = 0):
        super().__init__(path, len(KEYBOARD_JOG) // 2)
        self._restore = _cbreak(self._fd)

    def poll(self) -> DeviceInput:
        self.axes[:] = 0.0
        self.buttons.clear()
        return super().poll()

    def feed(self, data: bytes) -> bytes:
        for char in data.decode(errors="ignore").lower():
            index = KEYBOARD_JOG.find(char)
            if index >= 0:
                self.axes[index // 2] = 1.0 if index % 2 == 0 else -1.0
            elif char in KEYBOARD_BUTTONS:
                self.buttons.add(KEYBOARD_BUTTONS[char])
        return b""

    def close(self) -> None:
        if self._restore is not None:
            self._restore()
        super().close()


def _cbreak(fd: int):
    """Put a terminal in cbreak mode (keys arrive without Enter); returns the function that restores it."""
    if not os.isatty(fd):
        return None
    import termios
    import tty

    saved = termios.tcgetattr(fd)
    tty.setcbreak(fd)
    return lambda: termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def open_device(backend: str, path: str, axis_range: float, six_axis: bool = False) -> StreamDevice:
    if backend == "gamepad":
        return GamepadDevice(path, axis_range)
    if backend == "spacemouse":
        return SpaceMouseDevice(path, six_axis=six_axis)
    if backend == "keyboard":
        return KeyboardDevice(path or 0)
    raise ValueError(f"no device backend {backend!r}")
