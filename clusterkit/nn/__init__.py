"""Shared network building blocks (encoders, autoencoders, heads) sized from the data."""
