"""Private deconfliction: two rival hubs find where their plans meet without either holding
the other's plans (docs/private-deconfliction.md).

Sans-IO library code, for the federation link to carry:

- `Terms` (terms.py): a `[[federate]]`'s `deconflict = "private"` terms (`from_federate`).
- `Holding` (cells.py): one of our own volumes, sites or lines, with its uncertainty.
- `PrivateRound` (round.py): one side of a round — `open()` (initiator) and `receive(bytes)`
  return the bytes to send; when `state == "done"`, `result` holds the figures, our matched
  cells, the conflicts (engine `Conflict`s, the other side named by an opaque handle), the
  ledger `Record` and the secret `Opening`; `state == "refused"` says why in the figures.
- `audit` (commit.py): check an `Opening` against the `Evidence` the other hub recorded.
"""

from commonsky.privdeconf.cells import CellsError, Holding
from commonsky.privdeconf.commit import Audit, Evidence, Opening, audit
from commonsky.privdeconf.round import (
    Figures,
    Gate,
    PrivateRound,
    Record,
    Result,
    RoundRefused,
    run_in_memory,
)
from commonsky.privdeconf.terms import Terms, TermsError, from_federate

__all__ = [
    "Audit",
    "CellsError",
    "Evidence",
    "Figures",
    "Gate",
    "Holding",
    "Opening",
    "PrivateRound",
    "Record",
    "Result",
    "RoundRefused",
    "Terms",
    "TermsError",
    "audit",
    "from_federate",
    "run_in_memory",
]
