"""The decorators: ``@cache`` (with ``@cache.batch``) and ``@bg`` (with ``bg.write`` /
``bg.read``), their key templates and the clients they run on.  Public names are
re-exported by :mod:`stackquery`."""
