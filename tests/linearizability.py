"""Moved to testkit.linearizability (issue 17): import from there.

Kept only so that tests written before the move, on branches merged after it, still
import; to be deleted once no test imports ``linearizability``.
"""

from testkit.linearizability import *  # noqa: F401,F403
