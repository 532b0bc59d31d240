"""fl-trainer: trains the rounds a coordinator names it for, on this host's data only."""
