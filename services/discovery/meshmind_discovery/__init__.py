"""discovery: heartbeats this host into the mesh-peers bucket and turns the bucket into events."""
