"""Raw dataset readers, superpoints, the scene cache and the `Scene` data model."""
