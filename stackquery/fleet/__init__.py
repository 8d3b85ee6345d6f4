"""Many processes on one Redis behaving like one cache: broadcast and single flight."""
