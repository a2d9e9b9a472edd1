import os
import sys
from pathlib import Path

os.environ.setdefault("JAX_PLATFORMS", "cpu")  # the learner tests run on CPU, GPU or not
sys.path.insert(0, str(Path(__file__).parent))  # rl_helpers, imported by name
