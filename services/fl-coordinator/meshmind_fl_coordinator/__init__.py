"""fl-coordinator: runs federated jobs while it holds their lease; a standby resumes them."""
