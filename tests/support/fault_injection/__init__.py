"""A test-only Django app: the armed faults of allocator/faults.py. Installed only by
config/settings/test.py, so production databases never hold its table."""
