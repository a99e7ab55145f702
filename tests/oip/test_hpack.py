"""The gRPC front's HPACK decoder against the ``hpack`` package's encoder and decoder, the RFC's
examples, the blocks it keeps, and malformed blocks."""

from __future__ import annotations

import random

import hpack
import pytest
from hpack.table import HeaderTable

from server.oip.hpack import STATIC_TABLE, Decoder, HpackError, encode, encode_integer


def test_static_table_is_the_rfcs() -> None:
    assert STATIC_TABLE == HeaderTable.STATIC_TABLE


def test_rfc_7541_c4_requests_with_huffman() -> None:
    decoder = Decoder()
    blocks = [
        "828684418cf1e3c2e5f23a6ba0ab90f4ff",
        "828684be5886a8eb10649cbf",
        "828785bf408825a849e95ba97d7f8925a849e95bb8e8b4bf",
    ]
    want = [
        [(b":method", b"GET"), (b":scheme", b"http"), (b":path", b"/"),
         (b":authority", b"www.example.com")],
        [(b":method", b"GET"), (b":scheme", b"http"), (b":path", b"/"),
         (b":authority", b"www.example.com"), (b"cache-control", b"no-cache")],
        [(b":method", b"GET"), (b":scheme", b"https"), (b":path", b"/index.html"),
         (b":authority", b"www.example.com"), (b"custom-key", b"custom-value")],
    ]  # fmt: skip
    for block, fields in zip(blocks, want, strict=True):
        assert decoder.decode(bytes.fromhex(block)) == fields


def _random_fields(rng: random.Random) -> list[tuple[bytes, bytes]]:
    names = [b":path", b"content-type", b"user-agent", b"x-request-id", b"grpc-timeout", b"te"]
    fields = []
    for _ in range(rng.randint(1, 8)):
        name = rng.choice([*names, f"x-custom-{rng.randint(0, 40)}".encode()])
        value = bytes(
            rng.choice(b"abcdefghij0123456789-_/ %\xff") for _ in range(rng.randint(0, 300))
        )
        fields.append((name, value))
    return fields


@pytest.mark.parametrize("huffman", [True, False])
def test_decodes_what_hpack_encodes_through_table_churn_and_resizes(huffman: bool) -> None:
    rng = random.Random(7)
    encoder, theirs, ours = hpack.Encoder(), hpack.Decoder(), Decoder()
    for i in range(600):
        if i % 97 == 50:  # a resize: the encoder emits a table size update
            encoder.header_table_size = rng.choice([0, 256, 1024, 4096])
        fields = _random_fields(rng) if i % 3 else [(b":path", b"/a"), (b"te", b"trailers")]
        sensitive = [(n, v, True) if rng.random() < 0.1 else (n, v) for n, v in fields]
        block = encoder.encode(sensitive, huffman=huffman)
        want = [(bytes(n), bytes(v)) for n, v in theirs.decode(block, raw=True)]
        assert ours.decode(block) == want, i


def test_a_kept_block_is_decoded_again_once_the_table_changed() -> None:
    decoder = Decoder()
    first = b"\x40" + encode_integer(1, 7) + b"a" + encode_integer(1, 7) + b"1"  # a: 1, indexed
    assert decoder.decode(first) == [(b"a", b"1")]
    newest = bytes([0x80 | 62])  # the newest entry of the dynamic table
    assert decoder.decode(newest) == [(b"a", b"1")]
    assert decoder.decode(newest) == [(b"a", b"1")]  # kept, and still right
    second = b"\x40" + encode_integer(1, 7) + b"b" + encode_integer(1, 7) + b"2"
    decoder.decode(second)
    assert decoder.decode(newest) == [(b"b", b"2")]  # the table changed: decoded again


def test_our_blocks_decode_with_hpack() -> None:
    fields = [
        (b":status", b"200"),
        (b"content-type", b"application/grpc"),
        (b"grpc-status", b"3"),
        (b"grpc-message", b"x" * 300),
        (b"retry-after", b"1"),
    ]
    decoded = hpack.Decoder().decode(encode(fields), raw=True)
    assert [(bytes(n), bytes(v)) for n, v in decoded] == fields


@pytest.mark.parametrize(
    ("block", "problem"),
    [
        (b"\x80", "index 0"),
        (bytes([0x80 | 70]), "not in the table"),
        (b"\xff\xff\xff", "ends inside an integer"),
        (b"\xff" + b"\xff" * 6 + b"\x01", "too large"),
        (b"\x40", "ends inside a field"),
        (b"\x40\x01a\x05ab", "runs past the block"),
        (b"\x3f\xe2\x1f", "table size 4097"),  # 31 + 98 + (31 << 7): over the 4096 announced
        (b"\x82\x20", "after a field"),
        (b"\x20\x20\x20", "more than two"),
        (b"\x40\x81\xff\x01a", "Huffman"),
        (b"\x40\x7f\xff\xff\x03", "the limit is"),
    ],
)
def test_malformed_blocks_are_errors(block: bytes, problem: str) -> None:
    with pytest.raises(HpackError, match=problem):
        Decoder(max_list=16384).decode(block)


def test_a_small_block_cannot_expand_past_the_header_list_limit() -> None:
    decoder = Decoder(max_list=16384)
    big = b"\x40" + encode_integer(1, 7) + b"a" + encode_integer(3000, 7) + b"v" * 3000
    decoder.decode(big)  # one 3 KB entry in the table
    assert len(decoder.decode(bytes([0x80 | 62]) * 5)) == 5  # 15 KB: under the limit
    with pytest.raises(HpackError, match="header list over 16384"):
        decoder.decode(bytes([0x80 | 62]) * 1000)  # 1,000 bytes naming 3 MB
