"""``jtrix warrant ...`` and ``jtrix descriptor ...`` (placeholder list, filled by the warrants work)."""

COMMANDS: list = []
