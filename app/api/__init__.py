"""HTTP blueprints, one per surface."""
