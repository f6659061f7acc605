"""Unified 3D scene segmentation."""
