"""Worker scripts for ``test_bg_processes``: each runs its own ``trio.run`` in its own process."""
