"""Dockyard: ECS you can run yourself."""

__version__ = "0.1.0"
