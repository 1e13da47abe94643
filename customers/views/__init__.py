"""Customer pages, one module per topic: profile, merge, privacy, imports."""
