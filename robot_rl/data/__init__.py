"""Episode store on zarr 3, its schema, and the samplers the learners read from (no learning framework here)."""

from robot_rl.data.replay import GROUPS, ReplayCache
from robot_rl.data.samplers import ChunkSampler, NStepSampler
from robot_rl.data.schema import EPISODE_FIELDS, NULLABLE_KEYS, SOURCES, KeySpec, make_step_schema
from robot_rl.data.store import EpisodeStore, EpisodeWriter
from robot_rl.data.validate import validate

__all__ = ["EPISODE_FIELDS", "GROUPS", "NULLABLE_KEYS", "SOURCES", "ChunkSampler", "EpisodeStore", "EpisodeWriter",
           "KeySpec", "NStepSampler", "ReplayCache", "make_step_schema", "validate"]
