"""The test kit: real NATS meshes, a small echo service, and helpers shared by the tests."""
