"""The network on chip: FIFOs, arbiters, the 5-port router and the mesh fabric."""


def _refuse(component, message):
    """Raise ``ValueError(message)`` from a component's constructor without Amaranth also
    warning that the half-built component was never elaborated."""
    component._MustUse__used = True
    raise ValueError(message)
