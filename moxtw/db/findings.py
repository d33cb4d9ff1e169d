"""What a verification of stored data found (``moxtw verifydata``: accounts and queue).

*errors* are states the code never produces on its own and mean data needs attention;
*notes* are leftovers of interrupted operations, safe to remove; *fixed* lists what a run
with ``fix`` changed.
"""

from dataclasses import dataclass, field


@dataclass
class Findings:
    errors: list = field(default_factory=list)
    notes: list = field(default_factory=list)
    fixed: list = field(default_factory=list)

    @property
    def ok(self):
        return not self.errors
