import os

import numpy as np
import pytest


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


@pytest.fixture(scope="session")
def esc50_root():
    """The ESC-50 root from $ESC50_DIR; tests that need it skip with a reason otherwise, except
    in CI ($CI set), where a missing data set is an error: a wrong path must not turn a dozen
    end-to-end tests into quiet skips."""
    root = os.environ.get("ESC50_DIR")
    if not root or not os.path.isfile(os.path.join(root, "meta", "esc50.csv")):
        message = ("ESC-50 not available: set $ESC50_DIR to a folder with meta/esc50.csv "
                   f"(it is {root!r})")
        if os.environ.get("CI"):
            pytest.fail(message + "; in CI the data set is required", pytrace=False)
        pytest.skip(message)
    return root
