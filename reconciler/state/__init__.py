"""The state database: a cache of the world plus the apply journal and the lock."""
