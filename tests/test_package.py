"""The package's metadata: one version, read from evpy/__init__.py."""
import importlib.metadata
import os
import re

import pytest

from conftest import import_evpy


@pytest.mark.evpy_only
def test_version(kind):
    evpy = import_evpy()
    assert re.fullmatch(r'\d+\.\d+\.\d+([ab]|rc)?\d*', evpy.__version__)
    assert '__version__' in evpy.__all__
    # Installed (CI): the metadata's version is the same string.
    try:
        dist = importlib.metadata.distribution('evpy')
    except importlib.metadata.PackageNotFoundError:
        return
    here = os.path.realpath(os.path.dirname(evpy.__file__))
    files = {os.path.realpath(os.path.dirname(dist.locate_file(f)))
             for f in dist.files or () if f.name == '__init__.py'}
    if here in files:
        assert dist.version == evpy.__version__
