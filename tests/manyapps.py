"""Moved to testkit.manyapps (issue 17): import from there.

Kept only so that tests written before the move, on branches merged after it, still
import; to be deleted once no test imports ``manyapps``.
"""

from testkit.manyapps import *  # noqa: F401,F403
