"""Stanza helpers shared by features: addressing and error replies (RFC 6120 §8)."""
