"""The playbook's outcome, judged from its step journal: apart from the incident's state.

An incident whose convocation reached nobody must not read "completed": someone
looking at the list has to see at once that the committee was not told. The rule,
a pure function of (playbook, journal) so tests can hammer it:

- `failed`: a notification step (email, escalate, channel card) failed — it reached
  nobody, or fewer people than it requires — or the playbook stopped on a failing step;
- `done_with_failures`: every notification reached someone, but a step failed
  (snapshot, meeting…) or some recipients were not reached;
- `done`: every step did its job.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from crisisbot.models import PlaybookOutcome

if TYPE_CHECKING:
    from crisisbot.config.playbook import Playbook
    from crisisbot.store.base import StepRecord

def _missed(output: dict[str, Any]) -> int:
    """Recipients a finished notification step did not reach (lists or counts, per step)."""
    total = 0
    for key in ("rejected", "failed", "retrying"):
        value = output.get(key)
        total += len(value) if isinstance(value, (list, tuple, set)) else int(value or 0)
    return total


def _short(reasons: list[str]) -> str:
    return "; ".join(reasons[:3]) + (f"; and {len(reasons) - 3} more" if len(reasons) > 3 else "")


def judge(playbook: "Playbook", journal: dict[str, "StepRecord"]) -> tuple[PlaybookOutcome, str]:
    """(outcome, reason in a few words) once every step has ended."""
    fatal: list[str] = []
    partial: list[str] = []
    for step in playbook.steps:
        record = journal.get(step.id)  # type: ignore[arg-type]
        notifies = step.notifies  # declared by the step (StepSpec.notifies)
        if record is None or record.status not in ("done", "failed", "skipped"):
            fatal.append(f"step {step.id} did not run")
        elif record.status == "skipped":
            fatal.append(f"step {step.id} skipped ({record.detail or 'an earlier step failed'})")
        elif record.status == "failed":  # a notification step fails when it reached fewer than it requires
            (fatal if notifies else partial).append(f"step {step.id} failed: {record.detail}")
        elif notifies and isinstance(record.output, dict):
            output = record.output
            reached, required = output.get("reached"), output.get("required")
            if isinstance(reached, int) and isinstance(required, int) and reached < required:
                fatal.append(f"step {step.id} reached {reached} of the {required} required")
            elif missed := _missed(output):
                partial.append(f"step {step.id} did not reach {missed} recipient(s)")
    if fatal:
        return PlaybookOutcome.failed, _short(fatal + partial)
    if partial:
        return PlaybookOutcome.done_with_failures, _short(partial)
    return PlaybookOutcome.done, "every step did its job"

