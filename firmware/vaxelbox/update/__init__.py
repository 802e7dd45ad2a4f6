"""A/B firmware updates: the slot state machine (sans-I/O) and the boards' slot back-ends."""
