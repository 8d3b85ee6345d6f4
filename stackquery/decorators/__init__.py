"""The decorators: ``@cache`` and ``@bg`` (with ``bg.write`` / ``bg.read``), their key
templates and the clients they run on.  Public names are re-exported by :mod:`stackquery`."""
