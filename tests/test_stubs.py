"""evpy/_core.pyi describes evpy._core as built: every type and function
the module exports, every attribute each type defines itself (methods,
properties, members), each type's bases, and nothing the module lacks.

Dunder names are left out on both sides; everything else, private names
included, must match (evpy's Python layer uses the private ones)."""
import ast
import os

import pytest

from conftest import import_evpy


def _is_dunder(name):
    return name.startswith('__') and name.endswith('__')


def _core():
    return import_evpy()._core


def _stub():
    """{name: None for a function or constant, or (bases, members) for a
    class}, read from the _core.pyi installed beside the module."""
    path = os.path.join(os.path.dirname(_core().__file__), '_core.pyi')
    with open(path, encoding='utf-8') as f:
        tree = ast.parse(f.read(), path)
    names = {}
    for node in tree.body:
        if isinstance(node, ast.ClassDef):
            bases = [b.attr if isinstance(b, ast.Attribute) else b.id
                     for b in node.bases]
            members = set()
            for item in node.body:
                if isinstance(item, ast.FunctionDef):
                    members.add(item.name)
                elif (isinstance(item, ast.AnnAssign)
                      and isinstance(item.target, ast.Name)):
                    members.add(item.target.id)
            names[node.name] = (bases, members)
        elif isinstance(node, ast.FunctionDef):
            names[node.name] = None
        elif (isinstance(node, ast.AnnAssign)
              and isinstance(node.target, ast.Name)):
            names[node.target.id] = None
        # Plain assignments are the stub's own TypeVars, not the module's.
    return names


def _types():
    core = _core()
    return sorted(name for name in dir(core)
                  if isinstance(getattr(core, name), type))


def _stub_classes():
    # Read without importing evpy, for parametrizing; the test above
    # checks that these are exactly the module's types.
    path = os.path.join(os.path.dirname(os.path.dirname(
        os.path.abspath(__file__))), 'evpy', '_core.pyi')
    with open(path, encoding='utf-8') as f:
        tree = ast.parse(f.read(), path)
    return [node.name for node in tree.body
            if isinstance(node, ast.ClassDef)]


# Only in a test build made with EVPY_FAULTS=1 (csrc/core/faults.h).
FAULTS_ONLY = {'faults_set', 'faults_counts'}


def test_module_names_match():
    core = _core()
    actual = {name for name in dir(core) if not _is_dunder(name)}
    stub = set(_stub())
    if not core.FAULTS:
        stub -= FAULTS_ONLY
    assert sorted(actual - stub) == [], 'missing from _core.pyi'
    assert sorted(stub - actual) == [], 'in _core.pyi, not in _core'


def test_types_are_the_stub_classes():
    stub = _stub()
    assert _types(), 'no types found in _core'
    assert _types() == sorted(name for name, value in stub.items()
                              if value is not None)
    assert _types() == sorted(_stub_classes())


@pytest.mark.parametrize('name', _stub_classes())
def test_type_members_match(name):
    cls = getattr(_core(), name)
    bases, members = _stub()[name]
    assert bases == [b.__name__ for b in cls.__bases__
                     if b is not object]
    actual = {attr for attr in vars(cls) if not _is_dunder(attr)}
    assert sorted(actual - members) == [], f'{name}: missing from stub'
    assert sorted(members - actual) == [], f'{name}: not in _core'
