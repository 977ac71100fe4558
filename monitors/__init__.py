"""Sources of events: each monitor runs its own threads and emits Events to one callback."""
