"""The compute tile: SRAM banks, matrix unit, SIMD unit (and, later, controller)."""
