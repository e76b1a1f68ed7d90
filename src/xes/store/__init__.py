"""LMDB storage: the environment and the permanent event store."""
