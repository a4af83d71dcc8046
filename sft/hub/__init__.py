"""Sharing: Hub access, pushing a model with its model card, and downloading models."""
