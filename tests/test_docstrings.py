"""Every public function, class and method in evpy/ has a docstring.

ruff's D1 rules (pyproject.toml) check the same in CI, but count the
methods of private classes (transports._Common, sendfile's protocol) as
private; here every name without a leading underscore counts, wherever it
is defined. Reads the source only: no loop involved."""
import ast
import os

import pytest

PACKAGE = os.path.join(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))), 'evpy')
DEFS = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)


def _modules():
    if not os.path.isdir(PACKAGE):
        return []
    return sorted(name for name in os.listdir(PACKAGE)
                  if name.endswith('.py'))


def _undocumented(node, path):
    """Public definitions under node (module or class body, including
    version-dependent `if` blocks) that lack a docstring."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, DEFS):
            if (not child.name.startswith('_')
                    and ast.get_docstring(child) is None):
                yield f'{path}:{child.lineno} {child.name}'
            if isinstance(child, ast.ClassDef):
                yield from _undocumented(child, path)
        elif isinstance(child, (ast.If, ast.Try)):
            yield from _undocumented(child, path)


def test_source_tree_found():
    # The check below must not pass by reading nothing.
    assert 'loop.py' in _modules()


@pytest.mark.parametrize('module', _modules())
def test_public_definitions_have_docstrings(module):
    path = os.path.join(PACKAGE, module)
    with open(path, encoding='utf-8') as f:
        tree = ast.parse(f.read(), path)
    assert ast.get_docstring(tree), f'{module} has no module docstring'
    missing = list(_undocumented(tree, module))
    assert not missing, 'missing docstrings: ' + ', '.join(missing)
