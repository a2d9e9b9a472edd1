"""The standard ROS 2 messages robot_rl speaks, as Cyclone DDS IDL structs that are wire-compatible with ROS 2.

ROS 2 puts a message `pkg/msg/Type` on DDS as the type `pkg::msg::dds_::Type_`, a `@final` struct encoded as plain
CDR (XCDR1, 4-byte encapsulation header `00 01 00 00` on little-endian hosts), on the topic `rt/<topic>`. These
dataclasses declare exactly that, with ROS 2's field names, so a process with only `cyclonedds` from PyPI talks to
real ROS 2 nodes, and `tests/hw/test_msgs.py` checks the bytes against an independent ROS 2 CDR encoder.

The ROS 2 `.msg` text of each type (`msg_definition`) is kept next to it: MCAP files need it as their schema, and the
compatibility test encodes from it. (No `from __future__ import annotations` here: cyclonedds reads the field
annotations as live objects.)
"""

import dataclasses
import struct
from dataclasses import dataclass, field

import cyclonedds.idl.types as t
import numpy as np
from cyclonedds.idl import IdlStruct
from cyclonedds.idl.annotations import final

DDS_TOPIC_PREFIX = "rt"  # ROS 2 topic `/joint_states` is DDS topic `rt/joint_states`


@final
@dataclass
class Time(IdlStruct, typename="builtin_interfaces::msg::dds_::Time_"):
    sec: t.int32 = 0
    nanosec: t.uint32 = 0


@final
@dataclass
class Header(IdlStruct, typename="std_msgs::msg::dds_::Header_"):
    stamp: Time = field(default_factory=Time)
    frame_id: str = ""


@final
@dataclass
class JointState(IdlStruct, typename="sensor_msgs::msg::dds_::JointState_"):
    header: Header = field(default_factory=Header)
    name: t.sequence[str] = field(default_factory=list)
    position: t.sequence[t.float64] = field(default_factory=list)
    velocity: t.sequence[t.float64] = field(default_factory=list)
    effort: t.sequence[t.float64] = field(default_factory=list)


@final
@dataclass
class Image(IdlStruct, typename="sensor_msgs::msg::dds_::Image_"):
    header: Header = field(default_factory=Header)
    height: t.uint32 = 0
    width: t.uint32 = 0
    encoding: str = ""
    is_bigendian: t.uint8 = 0
    step: t.uint32 = 0
    data: t.sequence[t.uint8] = field(default_factory=list)  # bytes are accepted when publishing

    # cyclonedds turns `uint8[]` into a Python list element by element (~5 ms per 84x84 RGB frame); this
    # hand-written plain-CDR codec moves `data` as one bytes object (tests/hw/test_msgs.py checks its bytes against
    # an independent ROS 2 encoder). Received images carry `data` as bytes. Other encodings fall back to cyclonedds.
    def serialize(self, buffer=None, endianness=None, use_version_2=None) -> bytes:
        if buffer is not None or endianness is not None or use_version_2:
            return super().serialize(buffer=buffer, endianness=endianness, use_version_2=use_version_2)
        return _encode_image(self)

    @classmethod
    def deserialize(cls, data: bytes, has_header: bool = True, use_version_2=None) -> "Image":
        if not has_header or use_version_2 or len(data) < 4 or data[:2] not in (b"\x00\x01", b"\x00\x00"):
            return super().deserialize(data, has_header=has_header, use_version_2=use_version_2)
        return _decode_image(cls, data)


@final
@dataclass
class MultiArrayDimension(IdlStruct, typename="std_msgs::msg::dds_::MultiArrayDimension_"):
    label: str = ""
    size: t.uint32 = 0
    stride: t.uint32 = 0


@final
@dataclass
class MultiArrayLayout(IdlStruct, typename="std_msgs::msg::dds_::MultiArrayLayout_"):
    dim: t.sequence[MultiArrayDimension] = field(default_factory=list)
    data_offset: t.uint32 = 0


@final
@dataclass
class Float64MultiArray(IdlStruct, typename="std_msgs::msg::dds_::Float64MultiArray_"):
    layout: MultiArrayLayout = field(default_factory=MultiArrayLayout)
    data: t.sequence[t.float64] = field(default_factory=list)


@final
@dataclass
class Bool(IdlStruct, typename="std_msgs::msg::dds_::Bool_"):
    data: bool = False


@final
@dataclass
class String(IdlStruct, typename="std_msgs::msg::dds_::String_"):
    data: str = ""


def _encode_image(msg: Image) -> bytes:
    """Plain CDR, little endian, as ROS 2 sends it: 4-byte header, then fields aligned relative to its end."""
    out = bytearray(b"\x00\x01\x00\x00")

    def align4() -> None:
        out.extend(b"\x00" * (-(len(out) - 4) % 4))

    def string(text: str) -> None:
        raw = text.encode()
        align4()
        out.extend(struct.pack("<I", len(raw) + 1) + raw + b"\x00")

    out.extend(struct.pack("<iI", msg.header.stamp.sec, msg.header.stamp.nanosec))
    string(msg.header.frame_id)
    align4()
    out.extend(struct.pack("<II", msg.height, msg.width))
    string(msg.encoding)
    out.append(msg.is_bigendian)
    align4()
    payload = msg.data if isinstance(msg.data, bytes | bytearray | memoryview) else bytes(msg.data)
    out.extend(struct.pack("<II", msg.step, len(payload)))
    out.extend(payload)
    return bytes(out)


def _decode_image(cls: type[Image], data: bytes) -> Image:
    """Inverse of `_encode_image`, for either byte order (the header's second byte: 1 little, 0 big endian)."""
    order = "<" if data[1] == 1 else ">"
    view = memoryview(data)
    pos = 4

    def align4() -> None:
        nonlocal pos
        pos += -(pos - 4) % 4

    def unpack(fmt: str) -> tuple:
        nonlocal pos
        align4()
        values = struct.unpack_from(order + fmt, view, pos)
        pos += struct.calcsize(order + fmt)
        return values

    def string() -> str:
        nonlocal pos
        (size,) = unpack("I")
        if size == 0 or pos + size > len(view):
            raise ValueError("malformed CDR string in sensor_msgs/Image")
        text = bytes(view[pos:pos + size - 1]).decode()
        pos += size
        return text

    sec, nanosec = unpack("iI")
    frame_id = string()
    height, width = unpack("II")
    encoding = string()
    is_bigendian = view[pos]
    pos += 1
    step, size = unpack("II")
    if pos + size > len(view):
        raise ValueError(f"sensor_msgs/Image claims {size} data bytes, the sample holds {len(view) - pos}")
    return cls(header=Header(stamp=Time(sec=sec, nanosec=nanosec), frame_id=frame_id), height=height, width=width,
               encoding=encoding, is_bigendian=is_bigendian, step=step, data=bytes(view[pos:pos + size]))


# ROS 2 .msg text of every type, and the types each one references (for the concatenated MCAP/rosbag2 schema).
_DEFINITIONS: dict[type[IdlStruct], tuple[str, tuple[type[IdlStruct], ...]]] = {
    Time: ("int32 sec\nuint32 nanosec\n", ()),
    Header: ("builtin_interfaces/Time stamp\nstring frame_id\n", (Time,)),
    JointState: (
        "std_msgs/Header header\nstring[] name\nfloat64[] position\nfloat64[] velocity\nfloat64[] effort\n",
        (Header,),
    ),
    Image: (
        "std_msgs/Header header\nuint32 height\nuint32 width\nstring encoding\nuint8 is_bigendian\nuint32 step\n"
        "uint8[] data\n",
        (Header,),
    ),
    MultiArrayDimension: ("string label\nuint32 size\nuint32 stride\n", ()),
    MultiArrayLayout: ("MultiArrayDimension[] dim\nuint32 data_offset\n", (MultiArrayDimension,)),
    Float64MultiArray: ("MultiArrayLayout layout\nfloat64[] data\n", (MultiArrayLayout,)),
    Bool: ("bool data\n", ()),
    String: ("string data\n", ()),
}

MESSAGE_TYPES: tuple[type[IdlStruct], ...] = tuple(_DEFINITIONS)


def ros_type_name(msg_type: type[IdlStruct]) -> str:
    """`sensor_msgs::msg::dds_::JointState_` -> `sensor_msgs/msg/JointState` (the name ROS 2 tools show)."""
    pkg, _msg, _dds, name = msg_type.__idl_typename__.split("::")
    return f"{pkg}/msg/{name.removesuffix('_')}"


def message_type(ros_name: str) -> type[IdlStruct]:
    """`sensor_msgs/msg/JointState` (or `sensor_msgs/JointState`) -> `JointState`."""
    pkg, name = ros_name.split("/")[0], ros_name.split("/")[-1]
    for msg_type in MESSAGE_TYPES:
        if ros_type_name(msg_type) == f"{pkg}/msg/{name}":
            return msg_type
    raise KeyError(f"no message type {ros_name!r}; known: {[ros_type_name(m) for m in MESSAGE_TYPES]}")


def msg_definition(msg_type: type[IdlStruct]) -> str:
    """The concatenated `ros2msg` schema text (own definition, then each dependency) that MCAP and rosbag2 store."""
    text, _ = _DEFINITIONS[msg_type]
    seen: list[type[IdlStruct]] = []
    stack = list(_DEFINITIONS[msg_type][1])
    while stack:
        dep = stack.pop(0)
        if dep not in seen:
            seen.append(dep)
            stack.extend(_DEFINITIONS[dep][1])
    for dep in seen:
        short = ros_type_name(dep).replace("/msg/", "/")
        text += "=" * 80 + f"\nMSG: {short}\n" + _DEFINITIONS[dep][0]
    return text


def dds_topic(topic: str) -> str:
    """ROS 2 topic name -> DDS topic name: `/joint_states` -> `rt/joint_states`."""
    if not topic.startswith("/"):
        raise ValueError(f"topic {topic!r} must be absolute (start with '/')")
    return DDS_TOPIC_PREFIX + topic


def to_dict(msg: IdlStruct) -> dict:
    """Plain nested dict of a message (field names as in ROS 2): for JSON logs and MCAP encoders."""
    return dataclasses.asdict(msg)


def float64_array(values: np.ndarray | list[float]) -> Float64MultiArray:
    """A Float64MultiArray of an array. 1-D arrays get an empty layout (as ROS controllers publish and expect; it
    also halves the encoding cost in Python); N-D arrays get ROS's row-major layout (dim[i].stride = product of
    the sizes from i on)."""
    arr = np.asarray(values, dtype=np.float64)
    dims = []
    if arr.ndim > 1:
        strides = np.cumprod(arr.shape[::-1])[::-1]
        dims = [MultiArrayDimension(label="", size=int(size), stride=int(stride))
                for size, stride in zip(arr.shape, strides)]
    return Float64MultiArray(layout=MultiArrayLayout(dim=dims, data_offset=0), data=arr.ravel().tolist())


def array_of(msg: Float64MultiArray) -> np.ndarray:
    """The data of a Float64MultiArray as float64, shaped by its layout when the layout is consistent, else flat."""
    data = np.array(msg.data, dtype=np.float64)
    if msg.layout.data_offset:
        data = data[msg.layout.data_offset:]
    if len(msg.layout.dim) > 1:
        shape = tuple(d.size for d in msg.layout.dim)
        if int(np.prod(shape)) == data.size:
            return data.reshape(shape)
    return data


def stamp_of(seconds: float) -> Time:
    """Seconds (e.g. `time.time()`) -> builtin_interfaces/Time."""
    sec = int(np.floor(seconds))
    return Time(sec=sec, nanosec=min(int(round((seconds - sec) * 1e9)), 999_999_999))


def seconds_of(stamp: Time) -> float:
    return stamp.sec + stamp.nanosec * 1e-9
