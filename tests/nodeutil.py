"""Moved to testkit.node, testkit.procs, testkit.wait (issue 17): import from there.

Kept only so that tests written before the move, on branches merged after it, still
import; to be deleted once no test imports ``nodeutil``.
"""

from testkit.node import *  # noqa: F401,F403
from testkit.procs import *  # noqa: F401,F403
from testkit.wait import *  # noqa: F401,F403
