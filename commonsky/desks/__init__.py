"""Desks: the features that stand on the hub (hub/desk.py), one module each.

`hotline.py` (the hotline desk: messages, acknowledgements, deadlines), `deconfliction.py`
(the deconfliction desk: airspace and tracks into `commonsky.deconflict`, notices out),
`launch.py` (the launch desk: reports into `launch_core.py`, fused events and CAP warnings
out) and `recorder.py` (the ledger recorder: every durable item into `commonsky.ledger`, in
the store's transaction — `Hub.add_recorder`, not a desk's `observe`, since it must run before
anyone receives the item). The desks are added with `Hub.add_desk` by the composition root
(`services.py`); each sees the hub only through a `DeskView`, feeds a pure engine exactly
the inputs a recipient may see, and publishes what comes out as hub-made items with a fixed
audience — so the same routing, queues, store and replay carry them. `drawings.py` and
`geochat.py` read and write the CoT forms the desks share with TAK clients.
"""
