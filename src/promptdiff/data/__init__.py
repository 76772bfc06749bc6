"""Data layer: the HDF5 dataset format, experts, collection, importers and data modules."""
