"""Deciding from per-document outcomes: the gate, its statistics, power, sequential looks, canaries and the decision report."""
