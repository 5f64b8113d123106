"""Python version flags, in one place: what evpy's Python layer does
differently on the asyncio of each supported CPython (3.11 to 3.15)."""

import sys

PY312 = sys.version_info >= (3, 12)
PY313 = sys.version_info >= (3, 13)
PY314 = sys.version_info >= (3, 14)
PY315 = sys.version_info >= (3, 15)
