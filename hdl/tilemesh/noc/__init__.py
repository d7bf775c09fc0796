"""The network on chip: FIFOs, arbiters, the 5-port router and the mesh fabric."""
