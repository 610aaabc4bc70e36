import os

import numpy as np
import pytest


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


@pytest.fixture(scope="session")
def esc50_root():
    """The ESC-50 root from $ESC50_DIR; tests that need it skip with a reason otherwise."""
    root = os.environ.get("ESC50_DIR")
    if not root or not os.path.isfile(os.path.join(root, "meta", "esc50.csv")):
        pytest.skip("ESC-50 not available: set $ESC50_DIR to a folder with meta/esc50.csv")
    return root
