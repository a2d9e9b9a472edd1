"""The hand-written sensor_msgs/Image codec is byte-for-byte ROS 2's CDR (against mcap-ros2-support's independent
encoder and cyclonedds' own), reads big-endian samples too, and images survive the trip to a NumPy array."""

import numpy as np
import pytest
from cyclonedds.idl import IdlStruct
from cyclonedds.idl._support import Endianness
from mcap_ros2._dynamic import serialize_dynamic

from hw import msgs
from hw.msgs import Header, Image, Time
from hw.observation import image_array, image_message

rng = np.random.default_rng(0)
CASES = [
    Image(header=Header(stamp=Time(sec=5, nanosec=7), frame_id="c"), height=2, width=3, encoding="rgb8", step=9,
          data=rng.integers(0, 256, 18, dtype=np.uint8).tobytes()),
    Image(header=Header(frame_id="camera_front"), height=1, width=1, encoding="mono16", is_bigendian=1, step=2,
          data=b"\x01\xff"),
    Image(header=Header(frame_id="é"), height=84, width=84, encoding="bgr8", step=252,
          data=rng.integers(0, 256, 84 * 84 * 3, dtype=np.uint8).tobytes()),
    Image(),
]


@pytest.mark.parametrize("msg", CASES, ids=lambda m: f"{m.encoding or 'empty'}{m.height}x{m.width}")
def test_image_bytes_match_ros2_cdr_both_ways(msg):
    name = msgs.ros_type_name(Image)
    as_dict = {**msgs.to_dict(msg), "data": list(msg.data)}
    reference = serialize_dynamic(name, msgs.msg_definition(Image))[name](as_dict)
    generic = IdlStruct.serialize(msg)  # cyclonedds' own (element-wise) encoder
    assert msg.serialize() == reference == generic
    back = Image.deserialize(reference)
    assert back.data == bytes(msg.data) and back.header == msg.header
    assert (back.height, back.width, back.encoding, back.is_bigendian, back.step) == \
        (msg.height, msg.width, msg.encoding, msg.is_bigendian, msg.step)
    big = IdlStruct.serialize(msg, endianness=Endianness.Big)
    assert big[:2] == b"\x00\x00" and Image.deserialize(big).data == bytes(msg.data)


def test_truncated_image_samples_are_refused():
    data = CASES[0].serialize()
    with pytest.raises(ValueError):
        Image.deserialize(data[:-5])


def test_image_arrays_round_trip_and_bad_images_are_none():
    image = rng.integers(0, 256, (5, 7, 3), dtype=np.uint8)
    msg = image_message(image, Header())
    np.testing.assert_array_equal(image_array(Image.deserialize(msg.serialize())), image)
    bgr = Image(height=5, width=7, encoding="bgr8", step=21, data=image[..., ::-1].tobytes())
    np.testing.assert_array_equal(image_array(bgr), image)
    padded = Image(height=5, width=7, encoding="rgb8", step=24,  # rows padded to 24 bytes
                   data=np.pad(image.reshape(5, 21), ((0, 0), (0, 3))).tobytes())
    np.testing.assert_array_equal(image_array(padded), image)
    assert image_array(Image(height=5, width=7, encoding="rgb8", step=21, data=bytes(10))) is None
    assert image_array(Image(height=5, width=7, encoding="mono8", step=7, data=bytes(35))) is None
