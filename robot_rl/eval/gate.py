"""The deployment gate (RL-100 style): a candidate replaces the deployed policy only if the evaluator is sure enough.

Both policies are evaluated by the same evaluator on the same data. The candidate passes when its pessimistic value
(ensemble minimum) beats the deployed policy's pessimistic value by `margin`: comparing like with like, and asking
the candidate's worst head, not its average, to clear the bar.
"""

from __future__ import annotations

from dataclasses import dataclass

from robot_rl.eval.chunked_td import PolicyEstimate


@dataclass(frozen=True)
class GateDecision:
    accept: bool
    candidate: float  # the candidate's pessimistic value
    deployed: float  # the deployed policy's pessimistic value
    margin: float

    @property
    def reason(self) -> str:
        verb = "beats" if self.accept else "does not beat"
        return (f"candidate pessimistic value {self.candidate:.4f} {verb} deployed {self.deployed:.4f} "
                f"+ margin {self.margin:.4f}")


@dataclass(frozen=True)
class DeploymentGate:
    margin: float = 0.01

    def decide(self, candidate: PolicyEstimate, deployed: PolicyEstimate) -> GateDecision:
        accept = candidate.pessimistic > deployed.pessimistic + self.margin
        return GateDecision(accept, candidate.pessimistic, deployed.pessimistic, self.margin)
