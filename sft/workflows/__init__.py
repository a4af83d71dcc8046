"""End-to-end runs built from the stages: the demo and the results reproduction."""
