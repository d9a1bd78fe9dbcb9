# RFC 6962 §2.1 Merkle hash trees, with no I/O: hashes in, hashes and proofs out.
#
# Rule: every tree head and proof here must agree bit for bit with RFC 6962 (and its successor
# RFC 9162 §2.1), because a log that no other implementation can check proves nothing to a
# rival party.  leaf = SHA-256(0x00 || entry), node = SHA-256(0x01 || left || right), the empty
# tree is SHA-256(""), and a tree of n > 1 leaves splits at k = the largest power of two < n.
#
# Why the shapes below: the ledger stores the hash of every *complete* subtree (a "perfect"
# node: level L, index i covers leaves [i*2^L, (i+1)*2^L)).  Any range hash a proof needs is
# then at most O(log n) lookups of perfect nodes through the `NodeSource` protocol, so proofs
# cost O(log n) whatever the log size.  Appends only touch the `Frontier` (the perfect
# subtrees along the right edge, one per set bit of n), so an append is O(log n) hashes worst
# case and O(1) amortised, and reports which new perfect nodes to persist.
from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from typing import Protocol

HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()
_sha256 = hashlib.sha256


def leaf_hash(entry: bytes) -> bytes:
    return _sha256(b"\x00" + entry).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return _sha256(b"\x01" + left + right).digest()


def split_point(n: int) -> int:
    """k = the largest power of two strictly smaller than n (n >= 2), RFC 6962 §2.1."""
    if n < 2:
        raise ValueError(f"no split for a tree of {n} leaves")
    return 1 << ((n - 1).bit_length() - 1)


class NodeSource(Protocol):
    """Hash of the perfect subtree at (level, index); level 0 is the leaf hashes."""

    def node(self, level: int, index: int) -> bytes: ...


def range_hash(nodes: NodeSource, start: int, end: int) -> bytes:
    """MTH(D[start:end]) for a range that is a subtree of some RFC 6962 tree.

    Such a range always starts on a multiple of the largest power of two < its width, so its
    left part is one perfect node and only the right edge recurses: O(log n) lookups.
    """
    width = end - start
    if width <= 0:
        if width == 0 and start == 0:
            return EMPTY_ROOT
        raise ValueError(f"empty or inverted range [{start}, {end})")
    if width & (width - 1) == 0 and start % width == 0:
        level = width.bit_length() - 1
        return nodes.node(level, start >> level)
    # Walk the right edge, collecting perfect left parts, then fold from the right.
    lefts: list[bytes] = []
    while not (width & (width - 1) == 0 and start % width == 0):
        k = split_point(width)
        level = k.bit_length() - 1
        if start % k:
            raise ValueError(f"range [{start}, {end}) is not a subtree")
        lefts.append(nodes.node(level, start >> level))
        start += k
        width -= k
    level = width.bit_length() - 1
    acc = nodes.node(level, start >> level)
    for left in reversed(lefts):
        acc = node_hash(left, acc)
    return acc


def root(nodes: NodeSource, size: int) -> bytes:
    return range_hash(nodes, 0, size)


def inclusion_proof(nodes: NodeSource, index: int, size: int) -> list[bytes]:
    """PATH(index, D[0:size]) of RFC 6962 §2.1.1, ordered from the leaf up to the root."""
    if not 0 <= index < size:
        raise ValueError(f"leaf {index} is not in a tree of size {size}")
    path: list[bytes] = []
    start, end = 0, size
    while end - start > 1:
        k = split_point(end - start)
        if index < start + k:
            path.append(range_hash(nodes, start + k, end))
            end = start + k
        else:
            path.append(range_hash(nodes, start, start + k))
            start += k
    path.reverse()
    return path


def consistency_proof(nodes: NodeSource, old: int, new: int) -> list[bytes]:
    """PROOF(old, D[0:new]) of RFC 6962 §2.1.2; empty when old is 0 or old == new."""
    if not 0 <= old <= new:
        raise ValueError(f"no consistency proof from size {old} to size {new}")
    if old == 0 or old == new:
        return []
    path: list[bytes] = []
    start, end, m = 0, new, old
    complete = True  # SUBPROOF's b: the old tree is still a complete subtree of this one
    while m != end - start:
        k = split_point(end - start)
        if m <= k:
            path.append(range_hash(nodes, start + k, end))
            end = start + k
        else:
            path.append(range_hash(nodes, start, start + k))
            start += k
            m -= k
            complete = False
    if not complete:
        path.append(range_hash(nodes, start, end))
    path.reverse()
    return path


def root_from_inclusion_proof(index: int, size: int, leaf: bytes, proof: Sequence[bytes]) -> bytes:
    """The root an audit path implies (RFC 9162 §2.1.3.2); raises ValueError when malformed."""
    if not 0 <= index < size:
        raise ValueError(f"leaf {index} is not in a tree of size {size}")
    if len(leaf) != HASH_SIZE:
        raise ValueError("leaf hash is not 32 bytes")
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        if len(p) != HASH_SIZE:
            raise ValueError("proof element is not 32 bytes")
        if sn == 0:
            raise ValueError("proof is too long")
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ValueError("proof is too short")
    return r


def verify_inclusion(
    index: int, size: int, leaf: bytes, proof: Sequence[bytes], expected_root: bytes
) -> bool:
    try:
        return root_from_inclusion_proof(index, size, leaf, proof) == expected_root
    except ValueError:
        return False


def verify_consistency(
    old: int, new: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]
) -> bool:
    """RFC 9162 §2.1.4.2: does the tree of size `new` extend the tree of size `old`?"""
    if not 0 <= old <= new:
        return False
    if old == new:
        return not proof and old_root == new_root
    if old == 0:
        return not proof  # every tree extends the empty tree
    if not proof or any(len(p) != HASH_SIZE for p in proof):
        return False
    path = list(proof)
    if old & (old - 1) == 0:
        path.insert(0, old_root)  # the old tree is itself a node of the new one
    fn, sn = old - 1, new - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    return sn == 0 and fr == old_root and sr == new_root


class Frontier:
    """The perfect subtrees on the right edge of a tree: one per set bit of its size.

    `append` returns the perfect nodes the new leaf completed, as (level, index, hash) with
    level >= 1, so a store can persist exactly those and answer `NodeSource.node` later.
    """

    __slots__ = ("_hashes", "_size")

    def __init__(self, size: int = 0, hashes: Sequence[bytes] = ()) -> None:
        if len(hashes) != size.bit_count():
            raise ValueError(f"a frontier of size {size} has {size.bit_count()} hashes")
        self._size = size
        self._hashes = list(hashes)  # largest (leftmost) subtree first

    @classmethod
    def load(cls, size: int, lookup: Callable[[int, int], bytes]) -> Frontier:
        """Rebuild from stored perfect nodes (O(log n) lookups)."""
        hashes: list[bytes] = []
        start = 0
        for level in range(size.bit_length() - 1, -1, -1):
            if size >> level & 1:
                hashes.append(lookup(level, start >> level))
                start += 1 << level
        return cls(size, hashes)

    @property
    def size(self) -> int:
        return self._size

    def copy(self) -> Frontier:
        return Frontier(self._size, self._hashes)

    def append(self, leaf: bytes) -> list[tuple[int, int, bytes]]:
        made: list[tuple[int, int, bytes]] = []
        hashes = self._hashes
        acc = leaf
        index = self._size
        level = 0
        while index & 1:  # each trailing 1 bit is a finished sibling waiting on the left
            acc = node_hash(hashes.pop(), acc)
            index >>= 1
            level += 1
            made.append((level, index, acc))
        hashes.append(acc)
        self._size += 1
        return made

    def append_subtree(self, level: int, subtree: bytes) -> None:
        """Append a whole perfect subtree of 2**level leaves, given its hash.  The frontier's
        size must be a multiple of 2**level (the subtree is then a node of the final tree)."""
        if self._size & ((1 << level) - 1):
            raise ValueError(f"a level-{level} subtree cannot start at leaf {self._size}")
        hashes = self._hashes
        acc = subtree
        index = self._size >> level
        while index & 1:
            acc = node_hash(hashes.pop(), acc)
            index >>= 1
        hashes.append(acc)
        self._size += 1 << level

    def root(self) -> bytes:
        if not self._hashes:
            return EMPTY_ROOT
        acc = self._hashes[-1]
        for h in reversed(self._hashes[:-1]):
            acc = node_hash(h, acc)
        return acc


class MemoryTree:
    """An in-memory log of leaf hashes with every perfect node kept: tests and offline tools."""

    def __init__(self) -> None:
        self._levels: list[list[bytes]] = [[]]
        self._frontier = Frontier()

    @property
    def size(self) -> int:
        return self._frontier.size

    def append(self, leaf: bytes) -> None:
        self._levels[0].append(leaf)
        for level, index, h in self._frontier.append(leaf):
            if level == len(self._levels):
                self._levels.append([])
            assert len(self._levels[level]) == index
            self._levels[level].append(h)

    def node(self, level: int, index: int) -> bytes:
        return self._levels[level][index]

    def root(self, size: int | None = None) -> bytes:
        return self._frontier.root() if size is None else root(self, size)

    def inclusion_proof(self, index: int, size: int | None = None) -> list[bytes]:
        return inclusion_proof(self, index, self.size if size is None else size)

    def consistency_proof(self, old: int, new: int | None = None) -> list[bytes]:
        return consistency_proof(self, old, self.size if new is None else new)


def root_of_leaf_hashes(leaves: Sequence[bytes]) -> bytes:
    """MTH of a whole list of leaf hashes, level by level (an odd last node moves up as is,
    which is exactly RFC 6962's split rule).  The fastest way to check an export's root."""
    level = list(leaves)
    if not level:
        return EMPTY_ROOT
    while len(level) > 1:
        odd = level[-1] if len(level) & 1 else None
        pairs = zip(level[0::2], level[1::2], strict=False)
        level = [_sha256(b"\x01" + a + b).digest() for a, b in pairs]
        if odd is not None:
            level.append(odd)
    return level[0]


def subtree_blocks(start: int, leaves: Sequence[bytes]) -> list[tuple[int, bytes]]:
    """Split leaves [start, start + len(leaves)) of a bigger tree into its largest aligned
    perfect subtrees, left to right, as (level, hash): what `Frontier.append_subtree` takes.
    Lets separate workers hash disjoint runs of one log and a merger finish the root."""
    blocks: list[tuple[int, bytes]] = []
    pos, end, i = start, start + len(leaves), 0
    while pos < end:
        width = pos & -pos if pos else 1 << end.bit_length()
        while width > end - pos:
            width >>= 1
        blocks.append((width.bit_length() - 1, root_of_leaf_hashes(leaves[i : i + width])))
        pos += width
        i += width
    return blocks


def reference_root(leaves: Sequence[bytes]) -> bytes:
    """MTH straight from the RFC's recursive definition (leaf hashes in): a test oracle."""
    n = len(leaves)
    if n == 0:
        return EMPTY_ROOT
    if n == 1:
        return leaves[0]
    k = split_point(n)
    return node_hash(reference_root(leaves[:k]), reference_root(leaves[k:]))
