"""The tamper-evident audit trail (ADR 0021): hash chain, signed checkpoints, verify, export."""
