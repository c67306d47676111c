import importlib
import sys

import pytest

from tests import corpus


@pytest.fixture(scope='session')
def corpus_entry_points(tmp_path_factory):
    """Make the corpus defaults installed ``oslo.policy.policies``
    entry points for this process (and PYTHONPATH for subprocesses)."""
    path = corpus.write_entry_points(str(tmp_path_factory.mktemp('eps')))
    sys.path.insert(0, path)
    importlib.invalidate_caches()
    yield path
    sys.path.remove(path)
    importlib.invalidate_caches()
