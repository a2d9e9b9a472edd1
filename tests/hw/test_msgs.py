"""Our DDS messages are byte-for-byte ROS 2's CDR: checked against mcap-ros2-support's independent encoder/decoder.

mcap_ros2 builds its serializer from ROS 2 `.msg` text (here the standard definitions kept in hw.msgs), so the
comparison covers type names, field order, alignment and padding, sequence lengths, string terminators, and the
4-byte encapsulation header (00 01 00 00: plain CDR, little endian) that ROS 2 puts in front of every sample.
"""

import math

import numpy as np
import pytest
from mcap_ros2._dynamic import generate_dynamic, serialize_dynamic

from hw import msgs
from hw.msgs import (
    Bool,
    Float64MultiArray,
    Header,
    Image,
    JointState,
    MultiArrayDimension,
    MultiArrayLayout,
    String,
    Time,
)

CDR_LE_HEADER = b"\x00\x01\x00\x00"

# Values chosen to exercise alignment: odd-length strings before uint32/float64 fields, empty sequences, a uint8
# between strings and uint32s, nested sequences of structs, non-ASCII text, negative and extreme numbers.
CASES = [
    Time(sec=-3, nanosec=999_999_999),
    Header(stamp=Time(sec=1_700_000_000, nanosec=5), frame_id="base_link"),
    JointState(header=Header(stamp=Time(sec=7, nanosec=1), frame_id="x"), name=["waist", "shoulder", "é"],
               position=[0.1, -2.5, math.pi], velocity=[], effort=[1e300, -0.0, 5e-324]),
    JointState(),
    Image(header=Header(frame_id="cam"), height=2, width=3, encoding="rgb8", is_bigendian=0, step=9,
          data=list(range(18))),
    Image(header=Header(frame_id="abc"), height=1, width=1, encoding="mono16", is_bigendian=1, step=2,
          data=b"\x01\xff"),
    MultiArrayDimension(label="joints", size=7, stride=7),
    MultiArrayLayout(dim=[MultiArrayDimension("a", 2, 6), MultiArrayDimension("bc", 3, 3)], data_offset=1),
    Float64MultiArray(layout=MultiArrayLayout(dim=[MultiArrayDimension("rows", 1, 3)]),
                      data=[1.0, float("inf"), -7.25]),
    Float64MultiArray(data=[0.5] * 7),
    Bool(data=True),
    Bool(data=False),
    String(data=""),
    String(data='{"event": "start", "note": "ünïcode"}'),
]


def as_ros_dict(msg):
    """Field dict for mcap_ros2's encoder (bytes fields as lists of ints, which it expects for uint8[])."""
    out = msgs.to_dict(msg)
    if isinstance(msg, Image):
        out["data"] = list(msg.data)
    return out


@pytest.mark.parametrize("msg", CASES, ids=lambda m: type(m).__name__)
def test_bytes_equal_independent_ros2_cdr_encoder(msg):
    ros_name = msgs.ros_type_name(type(msg))
    reference = serialize_dynamic(ros_name, msgs.msg_definition(type(msg)))[ros_name](as_ros_dict(msg))
    ours = msg.serialize()
    assert reference[:4] == CDR_LE_HEADER
    assert ours == reference


@pytest.mark.parametrize("msg", CASES, ids=lambda m: type(m).__name__)
def test_independent_decoder_reads_our_bytes_and_we_read_back(msg):
    ros_name = msgs.ros_type_name(type(msg))
    decoded = generate_dynamic(ros_name, msgs.msg_definition(type(msg)))[ros_name](msg.serialize())
    expected = as_ros_dict(msg)

    def same(ours, theirs):
        if isinstance(ours, dict):
            return all(same(v, getattr(theirs, k)) for k, v in ours.items())
        if isinstance(ours, list):
            return len(ours) == len(theirs) and all(same(a, b) for a, b in zip(ours, theirs))
        return ours == theirs or (isinstance(ours, float) and math.isnan(ours) and math.isnan(theirs))

    assert same(expected, decoded)
    back = type(msg).deserialize(msg.serialize())
    assert as_ros_dict(back) == expected


def test_type_and_topic_names_follow_ros2_dds_conventions():
    assert JointState.__idl_typename__ == "sensor_msgs::msg::dds_::JointState_"
    assert Float64MultiArray.__idl_typename__ == "std_msgs::msg::dds_::Float64MultiArray_"
    assert Time.__idl_typename__ == "builtin_interfaces::msg::dds_::Time_"
    assert {msgs.ros_type_name(m) for m in msgs.MESSAGE_TYPES} >= {
        "sensor_msgs/msg/JointState", "sensor_msgs/msg/Image", "std_msgs/msg/Float64MultiArray",
        "std_msgs/msg/Bool", "std_msgs/msg/String", "std_msgs/msg/Header", "builtin_interfaces/msg/Time"}
    for m in msgs.MESSAGE_TYPES:
        assert m.__idl_annotations__.get("extensibility") == "final"
        assert msgs.message_type(msgs.ros_type_name(m)) is m
    assert msgs.dds_topic("/joint_states") == "rt/joint_states"
    with pytest.raises(ValueError):
        msgs.dds_topic("joint_states")


def test_float64_array_layout_and_stamps():
    grid = np.arange(6.0).reshape(2, 3)
    msg = msgs.float64_array(grid)
    assert [(d.size, d.stride) for d in msg.layout.dim] == [(2, 6), (3, 3)]  # ROS row-major convention
    np.testing.assert_array_equal(msgs.array_of(msg), grid)
    flat = msgs.float64_array([1.0, 2.0, 3.0])
    assert flat.layout.dim == [] and msgs.array_of(flat).tolist() == [1.0, 2.0, 3.0]
    inconsistent = Float64MultiArray(layout=MultiArrayLayout(dim=[MultiArrayDimension("", 5, 5)] * 2), data=[1.0])
    assert msgs.array_of(inconsistent).shape == (1,)
    stamp = msgs.stamp_of(12.25)
    assert (stamp.sec, stamp.nanosec) == (12, 250_000_000) and msgs.seconds_of(stamp) == 12.25
