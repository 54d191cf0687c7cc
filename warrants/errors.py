"""Errors named by whose fault they are.

Every error a user can cause or meet derives from :class:`JtrixError` and
carries the process exit code the CLI uses for it (DESIGN.md, "Exit codes"):

* ``BadInput`` (2): the caller handed us something wrong — malformed XML, an
  invalid descriptor, a refused warrant. The message is one line and names the
  cause (``file:line: ...`` for XML). Nothing was changed.
* ``NotFound`` (3): the thing named (app, netlet, hosting node) does not exist
  or is not running.
* ``JtrixError`` itself (1): the operation was valid but failed.

Anything that is not a ``JtrixError`` is a bug in jtrix and may show a traceback.
"""

from __future__ import annotations


class JtrixError(Exception):
    """An operation failed for a reason the user should see (exit code 1)."""

    exit_code = 1


class BadInput(JtrixError):
    """The caller's input is wrong; nothing was changed (exit code 2)."""

    exit_code = 2


class NotFound(JtrixError):
    """The named app, netlet or node does not exist or is not running (exit code 3)."""

    exit_code = 3
