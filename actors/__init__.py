"""Stream actors and the registry that supervises them."""
