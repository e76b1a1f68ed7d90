"""Group chat (XEP-0045) as pure rules: the room model, nicknames, the configuration form, the
stanzas a room sends and what each occupant receives for each committed event.

Layer 3 (no I/O, no clock, no randomness): the ``muc`` projection (log process) and every node's
delivery (XMPP process) fold the same committed events with :func:`xes.muc.transition.apply`,
so the room each of them holds is the same at the same log position (ADR 0011).
"""
