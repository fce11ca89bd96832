"""Per-class measures: invariance (eKLD, consistency), accuracy groups, and the per-class table."""
