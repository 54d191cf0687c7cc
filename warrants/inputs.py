"""Reading a file the user named: the one place that turns OS errors into one-line ``BadInput``."""

from __future__ import annotations

import os

from warrants.errors import BadInput


def read_user_file(path: str | os.PathLike, what: str, max_bytes: int | None = None) -> bytes:
    """The bytes of ``path``; ``what`` names it in errors (e.g. ``"warrant file"``).

    Raises ``BadInput`` naming the path and the cause (missing, a directory,
    permission, too large, other I/O error); never echoes the file's content.
    With ``max_bytes`` a larger file is refused without reading it whole.
    """
    try:
        with open(path, "rb") as f:
            data = f.read() if max_bytes is None else f.read(max_bytes + 1)
    except FileNotFoundError:
        raise BadInput(f"{path}: {what} not found") from None
    except IsADirectoryError:
        raise BadInput(f"{path}: is a directory, expected a {what}") from None
    except PermissionError:
        raise BadInput(f"{path}: permission denied reading the {what}") from None
    except OSError as err:
        raise BadInput(f"{path}: cannot read the {what} ({err.strerror})") from None
    if max_bytes is not None and len(data) > max_bytes:
        raise BadInput(f"{path}: {what} is larger than {max_bytes} bytes")
    return data


__all__ = ["read_user_file"]
