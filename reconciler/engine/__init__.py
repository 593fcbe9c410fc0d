"""The engine: plans, ordering, apply, journal. It knows no resource kind by name."""
