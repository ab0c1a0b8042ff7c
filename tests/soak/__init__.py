"""The fault soak (issue 6 item 1): many seeded downloads under random faults."""
