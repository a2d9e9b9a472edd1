import os
import random
import sys
from pathlib import Path

import pytest

os.environ.setdefault("JAX_PLATFORMS", "cpu")
sys.path.insert(0, str(Path(__file__).parent))  # hw_helpers, imported by name


@pytest.fixture(scope="session", autouse=True)
def _jax_compile_cache(request, tmp_path_factory):
    """The learner's jitted update takes ~30 s to compile on this CPU: keep compiled programs in pytest's cache, for
    this process and the node processes it starts (they inherit the environment)."""
    import jax

    cache = getattr(request.config, "cache", None)  # absent under `-p no:cacheprovider`: this session only
    path = str(cache.mkdir("robot_rl_hw_jax") if cache is not None else tmp_path_factory.mktemp("jax_cache"))
    os.environ["JAX_COMPILATION_CACHE_DIR"] = path
    jax.config.update("jax_compilation_cache_dir", path)
    yield


@pytest.fixture
def domain_id() -> int:
    return random.SystemRandom().randint(1, 232)
