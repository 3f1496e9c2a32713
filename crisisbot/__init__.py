"""crisisbot: turn an alarm into a running crisis room within seconds."""

__version__ = "0.1.0"
