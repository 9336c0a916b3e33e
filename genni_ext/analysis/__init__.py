"""What the ε-set is: baselines, identifiability, known symmetries, topology."""
