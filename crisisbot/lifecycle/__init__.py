"""The crisis lifecycle after the first alert: acknowledgements, escalation, stand-down,
duty schedules, restores, drills, maintenance silences, supervision and reports."""
