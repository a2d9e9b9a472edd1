"""The tasks and their scripted experts, by name."""

from sim.tasks.handover import BimanualHandover, BimanualHandoverExpert
from sim.tasks.pick_place import PickPlace, PickPlaceExpert
from sim.tasks.push_cube import PushCube, PushCubeExpert
from sim.tasks.reach import Reach, ReachExpert

TASKS = {cls.name: cls for cls in (Reach, PushCube, PickPlace, BimanualHandover)}
EXPERTS = {cls.task_class.name: cls for cls in (ReachExpert, PushCubeExpert, PickPlaceExpert, BimanualHandoverExpert)}
