"""MJCF of the mirrors, generated here so that the experts' kinematics and the scenes share one set of numbers.

A scene is the task's world (table, lights, cameras, objects, goal markers) plus one or two arms, each a body tree
with prefixed names under a mount body. Arms have gravity compensation and position servos on every joint, like the
industrial and hobby arms they stand in for; arm geoms collide with the world but not with each other.
"""

from __future__ import annotations

import re

from sim.kinematics import ArmGeometry, ArmMount

TIMESTEP = 0.005  # physics step; the control period (1 / control_hz) is an integer number of these

PUSHER = ArmGeometry(hand=0.08)
GRIPPER = ArmGeometry(hand=0.11)

# joint: (range, kp, damping, armature, force limit); shared by every arm kind that has the joint. Damping gives
# near-critically damped servos at the home pose; in the big joints the links carry about half the inertia (the
# rest is reflected rotor inertia, `armature`), so the `mass` variant changes how the arm moves.
JOINTS = {
    "waist": ((-1.6, 1.6), 80.0, 2.5, 0.01, 40.0),
    "shoulder": ((-0.4, 1.9), 120.0, 4.5, 0.02, 60.0),
    "elbow": ((-2.7, 0.4), 80.0, 2.5, 0.01, 40.0),
    "forearm_roll": ((-1.5, 1.5), 20.0, 0.9, 0.01, 10.0),
    "wrist_angle": ((-2.3, 0.8), 20.0, 0.9, 0.01, 10.0),
    "wrist_rotate": ((-1.6, 1.6), 10.0, 0.45, 0.005, 5.0),
    "gripper": ((0.0, 0.04), 300.0, 20.0, 0.01, 15.0),
}

# the controlled joints of each arm kind, in action order
ARM_JOINTS = {
    "pusher4": ("waist", "shoulder", "elbow", "wrist_angle"),
    "gripper5": ("waist", "shoulder", "elbow", "wrist_angle", "wrist_rotate", "gripper"),
    "gripper6": ("waist", "shoulder", "elbow", "forearm_roll", "wrist_angle", "wrist_rotate", "gripper"),
}

# geoms of objects and the table collide with everything; arm geoms (contype 2) only with objects and the table
WORLD_CONTACT = 'contype="1" conaffinity="3"'
ARM_CONTACT = 'contype="2" conaffinity="1"'


def geometry(kind: str) -> ArmGeometry:
    return PUSHER if kind == "pusher4" else GRIPPER


def _joint(name: str, axis: str, kind: str = "hinge") -> str:
    (lo, hi), _, damping, armature, _ = JOINTS[name]
    return (f'<joint name="{name}" type="{kind}" axis="{axis}" range="{lo} {hi}" damping="{damping}" '
            f'armature="{armature}"/>')


def _pusher(geom: ArmGeometry) -> str:
    return f"""
              <geom type="capsule" fromto="0 0 0 {geom.hand - 0.015} 0 0" size="0.012" rgba=".3 .3 .35 1"/>
              <geom name="pusher" type="sphere" pos="{geom.hand} 0 0" size="0.015" rgba=".9 .5 .1 1"
                    friction="0.5 0.005 0.0001"/>
              <site name="tcp" pos="{geom.hand} 0 0" size="0.005" rgba="1 0 0 0"/>"""


def _gripper(geom: ArmGeometry) -> str:
    finger_root = geom.hand - 0.06  # fingers are 7 cm long and end 1 cm past the TCP
    pad = 'friction="1.5 0.05 0.0001" condim="4" rgba=".2 .2 .2 1"'
    return f"""
              {_joint("wrist_rotate", "1 0 0")}
              <geom type="box" pos="{finger_root - 0.02} 0 0" size="0.02 0.05 0.012" rgba=".3 .3 .35 1"/>
              <camera name="wrist" pos="{finger_root - 0.03} 0 0.05" xyaxes="0 -1 0 0.3 0 1" fovy="70"/>
              <body name="finger_left" pos="{finger_root} 0 0">
                {_joint("gripper", "0 1 0", "slide")}
                <geom type="box" pos="0.035 0.005 0" size="0.035 0.005 0.01" mass="0.02" {pad}/>
              </body>
              <body name="finger_right" pos="{finger_root} 0 0">
                <joint name="gripper_mirror" type="slide" axis="0 -1 0" range="0 0.04" damping="20" armature="0.01"/>
                <geom type="box" pos="0.035 -0.005 0" size="0.035 0.005 0.01" mass="0.02" {pad}/>
              </body>
              <site name="tcp" pos="{geom.hand} 0 0" size="0.005" rgba="1 0 0 0"/>"""


def arm_xml(kind: str, prefix: str = "") -> tuple[str, str, str]:
    """MJCF parts of an arm of `kind` (see ARM_JOINTS) with every name prefixed: (body, actuators, equality).

    The body is in the arm frame (base at the origin facing +x); the caller wraps it in a body at the mount.
    """
    geom = geometry(kind)
    forearm = f'<geom type="capsule" fromto="0 0 0 {geom.fore} 0 0" size="0.02"/>'
    wrist_pos = f"{geom.fore} 0 0"
    close_roll = ""
    if "forearm_roll" in ARM_JOINTS[kind]:
        forearm = f"""<geom type="capsule" fromto="0 0 0 0.1 0 0" size="0.02"/>
          <body name="forearm_roll_link" pos="0.1 0 0" gravcomp="1">
            {_joint("forearm_roll", "1 0 0")}
            <geom type="capsule" fromto="0 0 0 {geom.fore - 0.1} 0 0" size="0.019"/>"""
        wrist_pos = f"{geom.fore - 0.1} 0 0"
        close_roll = "</body>"
    tool = _gripper(geom) if kind.startswith("gripper") else _pusher(geom)
    body = f"""<body name="base" childclass="arm">
      <geom type="cylinder" pos="0 0 0.03" size="0.05 0.03" rgba=".2 .2 .25 1"/>
      <body name="turret" pos="0 0 0.06" gravcomp="1">
        {_joint("waist", "0 0 1")}
        <geom type="cylinder" pos="0 0 0.03" size="0.04 0.03"/>
        <body name="upper_arm" pos="0 0 {geom.shoulder_height - 0.06}" gravcomp="1">
          {_joint("shoulder", "0 -1 0")}
          <geom type="capsule" fromto="0 0 0 {geom.upper} 0 0" size="0.025"/>
          <body name="forearm" pos="{geom.upper} 0 0" gravcomp="1">
            {_joint("elbow", "0 -1 0")}
            {forearm}
            <body name="hand" pos="{wrist_pos}" gravcomp="1">
              {_joint("wrist_angle", "0 -1 0")}
              <geom type="sphere" size="0.022"/>{tool}
            </body>
            {close_roll}
          </body>
        </body>
      </body>
    </body>"""
    actuators = "\n    ".join(
        f'<position name="{name}" joint="{name}" kp="{JOINTS[name][1]}" ctrlrange="{JOINTS[name][0][0]} '
        f'{JOINTS[name][0][1]}" forcerange="-{JOINTS[name][4]} {JOINTS[name][4]}"/>'
        for name in ARM_JOINTS[kind])
    equality = ('<joint joint1="gripper_mirror" joint2="gripper" polycoef="0 1 0 0 0"/>'
                if kind.startswith("gripper") else "")
    rename = lambda text: re.sub(r'(name|joint|joint1|joint2)="([^"]+)"', lambda m: f'{m[1]}="{prefix}{m[2]}"', text)
    return rename(body), rename(actuators), rename(equality)


def scene_xml(name: str, objects: str, arms: tuple[tuple[str, str, ArmMount], ...],
              focus: tuple[float, float, float] = (0.25, 0.0, 0.05)) -> str:
    """The task's world (table plane, light, cameras `front` and `top`, the task's objects) with its arms.

    `arms` holds (prefix, kind, mount) per arm; every name of an arm is prefixed, e.g. `left_waist`. Both cameras
    look at `focus`: `front` from 0.5 m ahead and 0.4 m up (image right is world +y), `top` from 0.75 m straight above
    (image up is world +x).
    """
    fx, fy, fz = focus
    bodies, actuators, equalities = [], [], []
    for prefix, kind, mount in arms:
        body, actuator, equality = arm_xml(kind, prefix)
        pos, quat = " ".join(map(str, mount.pos)), " ".join(map(str, mount.quat()))
        bodies.append(f'<body name="{prefix}mount" pos="{pos}" quat="{quat}">{body}</body>')
        actuators.append(actuator)
        equalities.append(equality)
    return f"""<mujoco model="{name}">
  <compiler angle="radian" autolimits="true"/>
  <option timestep="{TIMESTEP}" integrator="implicitfast" cone="elliptic" impratio="10"/>
  <visual><global offwidth="640" offheight="480"/><quality shadowsize="0" offsamples="0"/></visual>
  <default>
    <geom {WORLD_CONTACT}/>
    <default class="arm"><geom {ARM_CONTACT} density="600" rgba=".75 .75 .8 1"/></default>
  </default>
  <asset>
    <texture name="grid" type="2d" builtin="checker" rgb1=".35 .4 .45" rgb2=".45 .5 .55" width="64" height="64"/>
    <material name="grid" texture="grid" texrepeat="10 10"/>
  </asset>
  <worldbody>
    <light pos="{fx} {fy} 1.5" dir="0 0 -1" directional="true" diffuse=".8 .8 .8"/>
    <geom name="table" type="plane" size="1 1 0.05" material="grid" friction="0.5 0.005 0.0001"/>
    <camera name="front" pos="{fx + 0.5} {fy} {fz + 0.4}" xyaxes="0 1 0 -0.625 0 0.781" fovy="50"/>
    <camera name="top" pos="{fx} {fy} {fz + 0.75}" xyaxes="0 -1 0 1 0 0" fovy="50"/>
    {objects}
    {"".join(bodies)}
  </worldbody>
  <equality>{"".join(equalities)}</equality>
  <actuator>{"".join(actuators)}</actuator>
</mujoco>"""


def box_object(name: str, half: tuple[float, float, float], rgba: str, density: float) -> str:
    """A free box resting on the table."""
    hx, hy, hz = half
    return f"""<body name="{name}" pos="0.3 0 {hz}">
      <freejoint name="{name}"/>
      <geom name="{name}" type="box" size="{hx} {hy} {hz}" rgba="{rgba}" density="{density}" {WORLD_CONTACT}
            friction="0.5 0.005 0.0001"/>
    </body>"""
