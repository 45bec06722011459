"""Tamper evidence: Merkle checkpoints over the event log, verification, offline export."""
