"""JAX/Flax learners: bounded-norm networks, residual SAC/TD3, residual composition, the training loop.

Modules: `config` (recipes), `layers` / `networks` (bounded-norm and plain trunks), `distributional` (categorical
critic), `agent` (jitted updates), `residual` (action composition), `reward_scaling`, `replay` (a minimal stand-in),
`checkpoint` (msgpack + sha256), `loop` (training and evaluation). Nothing is imported here, so importing one module
(e.g. `networks` from the evaluator) does not pull in the rest.
"""
