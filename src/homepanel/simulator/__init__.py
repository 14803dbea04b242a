"""A simulated home lab: fake upstreams that speak the real wire formats."""
