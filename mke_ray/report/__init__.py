"""Results of a sweep: the per-trial table, the paper-layout table, and figures."""
