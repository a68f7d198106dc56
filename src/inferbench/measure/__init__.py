"""Stage 2: one benchmark job: harness, statistics, parity, fingerprint, trackers."""
