"""The planted bugs of tests/mutations.py still match the source: each original text occurs
exactly once in its file, so a rewrite of the code cannot silently retire a mutation."""
import os

import pytest

from mutations import MUTATIONS, ROOT


@pytest.mark.parametrize("name, path, old, new, tests", MUTATIONS,
                         ids=[m[0] for m in MUTATIONS])
def test_the_mutation_matches_the_source_once(name, path, old, new, tests):
    with open(os.path.join(ROOT, path)) as f:
        assert f.read().count(old) == 1, f"{name}: rewrite it for the code of {path} as it is"
    assert old != new
    assert tests and all(os.path.isfile(os.path.join(ROOT, t)) for t in tests)
