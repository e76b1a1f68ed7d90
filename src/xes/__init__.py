"""xes: an event-sourced, Raft-replicated XMPP server."""

__version__ = "0.1.0"
