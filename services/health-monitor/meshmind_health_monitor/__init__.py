"""health-monitor: probes the other hosts, scores every link, reports changes and state."""
