"""Bit-exact numpy references and cycle models."""
