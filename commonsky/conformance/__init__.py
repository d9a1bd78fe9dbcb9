"""Conformance with real TAK traffic: play captured CoT through a private hub, compare what
each party receives with what was sent (`commonsky conformance DIR`, and the corpus tests)."""

# The private hub's two parties: files are sent by ALPHA; BRAVO sees them as ALPHA::uid.
ALPHA, BRAVO = "ALPHA", "BRAVO"
