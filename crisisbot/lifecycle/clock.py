"""The clock moved to `crisisbot.clock` (one injectable clock for the engine, rosters,
timers and links, not the lifecycle's alone); this name stays for existing importers."""

from crisisbot.clock import Clock, ManualClock, SystemClock

__all__ = ["Clock", "ManualClock", "SystemClock"]
