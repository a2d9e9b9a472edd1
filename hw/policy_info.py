"""What the actor reports with every command on `/robot_rl/policy_info` (a Float64MultiArray with a fixed layout).

The recorder stores the policy's proposal, base and residual actions per step and the teleop watches the proposal
for drift; both need to know which observation a proposal answered. The layout (all normalized action units):

    [obs_stamp, chunk_id, chunk_index, weights_version, base (n), residual (n), proposal (n)]

`obs_stamp` is the header stamp of the `/joint_states` tick the command was computed from, bit-identical to
`hw.observation.stamp_key` of that message, so the match is exact. The one dimension's label names the layout.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hw.msgs import Float64MultiArray, MultiArrayDimension, MultiArrayLayout

LABEL = "obs_stamp,chunk_id,chunk_index,weights_version,base[n],residual[n],proposal[n]"
HEAD = 4


@dataclass
class PolicyInfo:
    obs_stamp: float
    chunk_id: int
    chunk_index: int
    weights_version: int  # 0: no residual weights yet (the base alone)
    base: np.ndarray
    residual: np.ndarray
    proposal: np.ndarray  # clip(base + residual, -1, 1): what the policy asked for

    def to_msg(self) -> Float64MultiArray:
        data = np.concatenate([[self.obs_stamp, self.chunk_id, self.chunk_index, self.weights_version],
                               self.base, self.residual, self.proposal]).astype(np.float64)
        layout = MultiArrayLayout(dim=[MultiArrayDimension(label=LABEL, size=data.size, stride=data.size)])
        return Float64MultiArray(layout=layout, data=data.tolist())

    @classmethod
    def from_msg(cls, msg: Float64MultiArray, action_dim: int) -> PolicyInfo | None:
        """None when the message does not have this layout for `action_dim` joints or holds non-finite values."""
        data = np.asarray(msg.data, np.float64)
        if data.size != HEAD + 3 * action_dim or not np.all(np.isfinite(data)):
            return None
        n = action_dim
        return cls(float(data[0]), int(data[1]), int(data[2]), int(data[3]), data[HEAD:HEAD + n],
                   data[HEAD + n:HEAD + 2 * n], data[HEAD + 2 * n:])
