"""What the data plane returns that the CLI's commands do not print: `Recorded`, what
`Call.record` wrote for a call the platform made. Defined with `Answer`, the record of an
`ask`, of which it is the part without the text (byokctl.services.ask)."""

from __future__ import annotations

from byokctl.services.ask import Recorded

__all__ = ["Recorded"]
