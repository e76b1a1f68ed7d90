"""Sealing: the cryptography of expiry that reaches the journal (ADR 0024, crypto-shredding).

Fields that retention must be able to erase are sealed at proposal time with a *data key*
(:mod:`.seal`); data keys travel through the log wrapped to each member's rotating *node key*
(:mod:`.wrap`) and live, unwrapped, only in each node's *key store* (:mod:`.keystore`), kept
apart from the data directory. Destroying a data key in every key store makes what it sealed
unreadable in the journal, the snapshots and the backups alike, while the hash chain, which
covers the ciphertext, still verifies.

Not yet wired to events: this package is the tested primitives the next step builds on.
"""
