"""consensus: the mesh's decision log and linearizable key-value store, over Raft or JetStream."""
