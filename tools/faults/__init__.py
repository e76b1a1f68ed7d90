"""The fault campaign (issue 20): a 3-node cluster, XEP-0198 clients, a seeded nemesis, a checker.

``python -m tools.faults.run --seed N --duration S --clients 20`` from the repository root;
``tests/integration/test_fault_campaign.py`` runs a short version. docs/reliability.md states
what the checker proves and records a long run's table.
"""
