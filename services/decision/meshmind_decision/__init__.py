"""decision: the MAPE-K loop that heals the mesh with agreed, exactly-once decisions."""
