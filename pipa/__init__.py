"""PIPA reproduction: library code behind the DVC stages in ``stages/``."""
