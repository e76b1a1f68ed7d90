"""Publish-subscribe (XEP-0060) as used for the Personal Eventing Protocol (XEP-0163).

Pure: node configuration and its forms (:mod:`xes.pubsub.config`), the stanzas nodes send
(:mod:`xes.pubsub.render`) and XEP-0115 verification strings (:mod:`xes.pubsub.caps`). The events
live in :mod:`xes.events.catalog`, the state in :mod:`xes.projections.pep`, the protocol in
:mod:`xes.features.pep` (ADR 0013).
"""
