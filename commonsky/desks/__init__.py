"""Glue between the hub and the pure feature packages.

Each desk subscribes to the hub's hooks, feeds a pure engine (deconflict, alerts, ledger)
exactly the inputs a recipient may see, and publishes what comes out as hub-made items with
a fixed audience — so the same routing, queues, store and replay carry them.
"""
