"""The SimPy model: replicas advancing iterations, a cluster routing arrivals to them."""
