import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # crash_writer and store_checks, imported by name

from crash_writer import SCHEMA  # noqa: E402


@pytest.fixture
def schema() -> dict:
    return dict(SCHEMA)
