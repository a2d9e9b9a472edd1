"""A user's own robot (MJCF or URDF) mirrored with a joint-name map: loads, steps, follows targets; clear errors."""

import numpy as np
import pytest

import sim

ARM = """<mujoco model="user_arm">
  <compiler angle="radian"/>
  <worldbody>
    <body name="link0" pos="0 0 0.05">
      <geom type="cylinder" size="0.04 0.05"/>
      <body name="link1" pos="0 0 0.05">
        <joint name="j_yaw" axis="0 0 1" range="-2 2" damping="2"/>
        <geom type="capsule" fromto="0 0 0.03 0 0 0.2" size="0.02"/>
        <body name="link2" pos="0 0 0.2">
          <joint name="j_pitch" axis="0 1 0" range="-1.5 1.5" damping="2"/>
          <geom type="capsule" fromto="0 0 0 0.25 0 0" size="0.02"/>
          <site name="tool" pos="0.25 0 0"/>
        </body>
      </body>
    </body>
  </worldbody>
  {actuators}
</mujoco>"""

URDF = """<robot name="one_link">
  <link name="base"><inertial><mass value="1"/><inertia ixx="0.01" iyy="0.01" izz="0.01" ixy="0" ixz="0" iyz="0"/>
    </inertial><collision><geometry><box size="0.1 0.1 0.1"/></geometry></collision></link>
  <link name="arm"><inertial><origin xyz="0.1 0 0"/><mass value="0.5"/>
    <inertia ixx="0.001" iyy="0.001" izz="0.001" ixy="0" ixz="0" iyz="0"/></inertial>
    <collision><origin xyz="0.1 0 0"/><geometry><box size="0.2 0.03 0.03"/></geometry></collision></link>
  <joint name="turn" type="revolute"><parent link="base"/><child link="arm"/><origin xyz="0 0 0.1"/>
    <axis xyz="0 0 1"/><limit lower="-1.5" upper="1.5" effort="10" velocity="1"/></joint>
</robot>"""

JOINT_MAP = {"yaw": "j_yaw", "pitch": "j_pitch"}


@pytest.fixture
def arm_file(tmp_path):
    path = tmp_path / "arm.xml"
    path.write_text(ARM.format(actuators=""))
    return path


def test_user_mjcf_with_a_joint_map_loads_steps_and_follows_targets(arm_file):
    env = sim.make_env("Reach", robot_file=str(arm_file), joint_map=JOINT_MAP, ee="tool")
    assert env.robot.joint_names == ("yaw", "pitch") and env.robot.joint_ranges == ((-2, 2), (-1.5, 1.5))
    obs, _ = env.reset(seed=0)
    assert obs["state"].shape == (2 + 2 + 3 + 3,)
    tcp = obs["state"][env.robot.state_slices["tcp_pos"]]
    np.testing.assert_allclose(tcp, env.data.site("robot/tool").xpos, atol=1e-6)
    for _ in range(40):
        obs, *_ = env.step(np.array([0.25, -0.2]))
    joints = obs["state"][env.robot.state_slices["joint_pos"]]
    np.testing.assert_allclose(joints, [0.5, -0.3], atol=0.03)  # the servos the mirror added track the targets


def test_user_position_actuators_are_kept(tmp_path):
    path = tmp_path / "arm.xml"
    path.write_text(ARM.format(actuators='<actuator><position joint="j_yaw" kp="30"/></actuator>'))
    env = sim.make_env("Reach", robot_file=str(path), joint_map=JOINT_MAP, ee="tool")
    assert env.model.nu == 2 and env.model.actuator_gainprm[env._act_ids[0], 0] == 30.0


def test_user_urdf_through_mujocos_compiler(tmp_path):
    path = tmp_path / "one_link.urdf"
    path.write_text(URDF)
    env = sim.make_env("Reach", robot_file=str(path), joint_map={"turn": "turn"}, ee="arm")
    env.reset(seed=0)
    for _ in range(30):
        obs, *_ = env.step(np.array([0.5]))
    assert obs["state"][0] == pytest.approx(0.75, abs=0.03)


@pytest.mark.parametrize("settings, words", [
    ({"joint_map": {"yaw": "j_base"}, "ee": "tool"}, ["'j_base'", "not in", "j_pitch, j_yaw"]),
    ({"joint_map": JOINT_MAP, "ee": "gripper"}, ["ee 'gripper'", "neither a site nor a body"]),
    ({"joint_map": JOINT_MAP}, ["needs ee"]),
    ({"joint_map": {}, "ee": "tool"}, ["needs a joint map"]),
])
def test_bad_joint_maps_and_end_effectors_are_clear_errors(arm_file, settings, words):
    with pytest.raises(sim.SimError) as info:
        sim.make_env("Reach", robot_file=str(arm_file), **settings)
    assert "\n" not in str(info.value) and all(word in str(info.value) for word in words)


def test_robot_file_that_does_not_compile_names_the_file_and_mujocos_message(tmp_path):
    path = tmp_path / "broken.xml"
    path.write_text(ARM.format(actuators="").replace('size="0.02"/>', 'size="thin"/>', 1))
    with pytest.raises(sim.SimError) as info:
        sim.make_env("Reach", robot_file=str(path), joint_map=JOINT_MAP, ee="tool")
    message = str(info.value)
    assert str(path) in message and "size" in message and "\n" not in message


def test_user_robot_on_a_manipulation_task_is_refused(arm_file):
    with pytest.raises(sim.SimError, match="task Reach only"):
        sim.make_env("PushCube", robot_file=str(arm_file), joint_map=JOINT_MAP, ee="tool")
