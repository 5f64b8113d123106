"""evpy: a fast asyncio event loop written in C.

    import asyncio, evpy
    evpy.run(main())                                     # any Python
    asyncio.run(main(), loop_factory=evpy.new_event_loop)  # 3.12+
    asyncio.set_event_loop_policy(evpy.EventLoopPolicy())  # policy users
"""

from ._core import BACKENDS, Handle, TimerHandle
from .loop import Loop, new_event_loop
from .policy import EventLoopPolicy, run

Policy = EventLoopPolicy

# The one place the version is written (pyproject.toml reads it from here).
__version__ = '0.1.0'

__all__ = ['BACKENDS', 'EventLoopPolicy', 'Handle', 'Loop', 'Policy',
           'TimerHandle', '__version__', 'new_event_loop', 'run']
