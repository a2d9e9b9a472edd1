"""Fixtures of the policy tests; the helpers live in policy_helpers.py (importable from the test modules)."""

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))

from policy_helpers import write_point_store  # noqa: E402


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Tests share two cores with other suites; one thread also keeps float reductions in one fixed order."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def point_store(tmp_path_factory) -> Path:
    return write_point_store(tmp_path_factory.mktemp("stores") / "point")


@pytest.fixture(scope="session")
def point_image_store(tmp_path_factory) -> Path:
    return write_point_store(tmp_path_factory.mktemp("stores") / "point_images", episodes=6, images=True)
