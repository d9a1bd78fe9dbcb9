# RFC 6962 conformance: the published Certificate Transparency vectors (leaves, tree heads,
# audit paths, consistency proofs, as distributed with transparency-dev/merkle), then
# properties over random sizes checked against the RFC's recursive definition.
from __future__ import annotations

import itertools
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from commonsky.ledger import merkle

LEAVES = [
    bytes.fromhex(h)
    for h in [
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    ]
]
ROOTS = [
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]
# (leaf index, tree size, audit path)
INCLUSION = [
    (
        0,
        8,
        [
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        5,
        8,
        [
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
    (2, 3, ["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"]),
    (
        1,
        5,
        [
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
    (0, 1, []),
]
# (old size, new size, proof)
CONSISTENCY = [
    (1, 1, []),
    (
        1,
        8,
        [
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        6,
        8,
        [
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
    (
        2,
        5,
        [
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
    (
        6,
        7,
        [
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
]


def vector_tree() -> merkle.MemoryTree:
    tree = merkle.MemoryTree()
    for leaf in LEAVES:
        tree.append(merkle.leaf_hash(leaf))
    return tree


def root_of(size: int) -> bytes:
    return bytes.fromhex(ROOTS[size])


def test_tree_heads_match_the_published_roots() -> None:
    tree = vector_tree()
    for size in range(len(LEAVES) + 1):
        assert tree.root(size).hex() == ROOTS[size]
        hashes = [merkle.leaf_hash(x) for x in LEAVES[:size]]
        assert merkle.root_of_leaf_hashes(hashes).hex() == ROOTS[size]
    assert tree.root().hex() == ROOTS[8]


def test_frontier_root_tracks_every_size() -> None:
    frontier = merkle.Frontier()
    assert frontier.root().hex() == ROOTS[0]
    for size, leaf in enumerate(LEAVES, 1):
        frontier.append(merkle.leaf_hash(leaf))
        assert frontier.root().hex() == ROOTS[size]


@pytest.mark.parametrize(("index", "size", "path"), INCLUSION)
def test_inclusion_vectors(index: int, size: int, path: list[str]) -> None:
    tree = vector_tree()
    proof = tree.inclusion_proof(index, size)
    assert [p.hex() for p in proof] == path
    leaf = merkle.leaf_hash(LEAVES[index])
    assert merkle.verify_inclusion(index, size, leaf, proof, root_of(size))


@pytest.mark.parametrize(("old", "new", "path"), CONSISTENCY)
def test_consistency_vectors(old: int, new: int, path: list[str]) -> None:
    tree = vector_tree()
    proof = tree.consistency_proof(old, new)
    assert [p.hex() for p in proof] == path
    assert merkle.verify_consistency(old, new, root_of(old), root_of(new), proof)


def _flip(proof: list[bytes], i: int) -> list[bytes]:
    bad = list(proof)
    bad[i] = bytes([bad[i][0] ^ 8]) + bad[i][1:]
    return bad


@pytest.mark.parametrize(("index", "size", "path"), [v for v in INCLUSION if v[2]])
def test_corrupted_inclusion_proofs_fail(index: int, size: int, path: list[str]) -> None:
    proof = [bytes.fromhex(p) for p in path]
    leaf = merkle.leaf_hash(LEAVES[index])
    root = root_of(size)
    probes = [
        (index + 1, size, leaf, proof, root),
        (index, size * 2, leaf, proof, root),
        (index, size, merkle.leaf_hash(b"wrong"), proof, root),
        (index, size, leaf, proof, root_of(0)),
        (index, size, leaf, [*proof, root], root),
        (index, size, leaf, [root, *proof], root),
        (index, size, leaf, proof[:-1], root),
        *[(index, size, leaf, _flip(proof, i), root) for i in range(len(proof))],
    ]
    if index > 0:
        probes.append((index - 1, size, leaf, proof, root))
    for probe in probes:
        assert not merkle.verify_inclusion(*probe)


@pytest.mark.parametrize(("old", "new", "path"), [v for v in CONSISTENCY if v[2]])
def test_corrupted_consistency_proofs_fail(old: int, new: int, path: list[str]) -> None:
    proof = [bytes.fromhex(p) for p in path]
    r1, r2 = root_of(old), root_of(new)
    probes = [
        (old - 1, new, r1, r2, proof),
        (old + 1, new, r1, r2, proof),
        (old, new * 2, r1, r2, proof),
        (old, new, r2, r1, proof),
        (old, new, r1, r2, []),
        (old, new, r1, r2, [*proof, r1]),
        (old, new, r1, r2, [r2, *proof]),
        (old, new, r1, r2, proof[:-1]),
        *[(old, new, r1, r2, _flip(proof, i)) for i in range(len(proof))],
    ]
    for probe in probes:
        assert not merkle.verify_consistency(*probe)


def test_edge_sizes() -> None:
    tree = vector_tree()
    assert merkle.verify_consistency(0, 5, root_of(0), root_of(5), [])
    assert not merkle.verify_consistency(5, 4, root_of(5), root_of(4), [])
    assert not merkle.verify_consistency(3, 3, root_of(3), root_of(4), [])
    with pytest.raises(ValueError, match="not in a tree"):
        tree.inclusion_proof(8, 8)
    assert not merkle.verify_inclusion(0, 0, root_of(1), [], root_of(0))


def _random_tree(n: int) -> merkle.MemoryTree:
    tree = merkle.MemoryTree()
    for i in range(n):
        tree.append(merkle.leaf_hash(i.to_bytes(4, "big")))
    return tree


BIG = _random_tree(600)


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_every_inclusion_proof_verifies(data: st.DataObject) -> None:
    size = data.draw(st.integers(1, BIG.size))
    index = data.draw(st.integers(0, size - 1))
    root = BIG.root(size)
    leaves = [BIG.node(0, i) for i in range(size)]
    assert root == merkle.reference_root(leaves)
    proof = BIG.inclusion_proof(index, size)
    assert len(proof) <= size.bit_length()
    assert merkle.verify_inclusion(index, size, leaves[index], proof, root)
    if size > 1:
        assert not merkle.verify_inclusion((index + 1) % size, size, leaves[index], proof, root)


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_every_consistency_proof_verifies(data: st.DataObject) -> None:
    new = data.draw(st.integers(0, BIG.size))
    old = data.draw(st.integers(0, new))
    proof = BIG.consistency_proof(old, new)
    assert merkle.verify_consistency(old, new, BIG.root(old), BIG.root(new), proof)
    if 0 < old < new:
        fork = merkle.leaf_hash(b"rewritten history")
        assert not merkle.verify_consistency(old, new, fork, BIG.root(new), proof)


def test_subtree_blocks_merge_to_the_root() -> None:
    rng = random.Random(3)
    leaves = [merkle.leaf_hash(bytes([i % 256, i // 256])) for i in range(300)]
    for size in [*range(0, 40), 255, 256, 257, 300]:
        cuts = sorted({0, size, *(rng.randrange(size + 1) for _ in range(rng.randint(0, 5)))})
        frontier = merkle.Frontier()
        for lo, hi in itertools.pairwise(cuts):
            for level, h in merkle.subtree_blocks(lo, leaves[lo:hi]):
                frontier.append_subtree(level, h)
        assert frontier.size == size
        assert frontier.root() == merkle.reference_root(leaves[:size])


def test_append_subtree_refuses_misaligned() -> None:
    frontier = merkle.Frontier()
    frontier.append(merkle.leaf_hash(b"a"))
    with pytest.raises(ValueError, match="cannot start at leaf 1"):
        frontier.append_subtree(1, merkle.leaf_hash(b"b"))
