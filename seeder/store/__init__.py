"""Where bytes land: the target directory (layout, state, flock, atomic publish) and the local
content-addressed cache.

Nothing here talks to the network: it may import :mod:`seeder.spec`, :mod:`seeder.integrity` and
the base modules (errors, log, failpoints), never :mod:`seeder.fetch` or :mod:`seeder.sources`, so
checking a target (:mod:`.verify`, the app's start-up check) stays light. A remote cache kind
will sit beside :mod:`.cache`.
"""

from .cache import Cache
from .state import FileRecord, ModelRecord, State
from .target import Target

__all__ = ["Cache", "FileRecord", "ModelRecord", "State", "Target"]
