"""Tests of brainalign.downstream."""
