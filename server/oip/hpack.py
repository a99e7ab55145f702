"""HPACK (RFC 7541) for the gRPC front's HTTP/2: a decoder with its dynamic table, and the
encoder of the few header blocks the server sends.

A gRPC client sends nearly the same header block on every call of a connection, and once the
first call has put its fields in the dynamic table the later blocks are all indexed fields, the
same bytes each time. :class:`Decoder` keeps the fields of such blocks by their bytes: a block that
changes nothing in the table decodes to what it decoded to before, as long as the table itself has
not changed since (any insertion or resize clears what was kept). So a steady stream of calls
costs one dictionary lookup per header block, and a block that inserts is decoded in full.

The server's own blocks need no table: every field is sent as a literal without indexing (the
client's decoder then keeps no state of ours), with the static table's index for the name where it
has one. Strings are sent as they are (Huffman coding is optional for an encoder); Huffman-coded
strings from the client are decoded with the ``hpack`` package's table.
"""

from __future__ import annotations

from collections import deque

from hpack.exceptions import HPACKDecodingError
from hpack.huffman_table import decode_huffman

Field = tuple[bytes, bytes]

STATIC_TABLE: tuple[Field, ...] = tuple(
    (name.encode(), value.encode())
    for name, value in (
        (":authority", ""),
        (":method", "GET"),
        (":method", "POST"),
        (":path", "/"),
        (":path", "/index.html"),
        (":scheme", "http"),
        (":scheme", "https"),
        (":status", "200"),
        (":status", "204"),
        (":status", "206"),
        (":status", "304"),
        (":status", "400"),
        (":status", "404"),
        (":status", "500"),
        ("accept-charset", ""),
        ("accept-encoding", "gzip, deflate"),
        ("accept-language", ""),
        ("accept-ranges", ""),
        ("accept", ""),
        ("access-control-allow-origin", ""),
        ("age", ""),
        ("allow", ""),
        ("authorization", ""),
        ("cache-control", ""),
        ("content-disposition", ""),
        ("content-encoding", ""),
        ("content-language", ""),
        ("content-length", ""),
        ("content-location", ""),
        ("content-range", ""),
        ("content-type", ""),
        ("cookie", ""),
        ("date", ""),
        ("etag", ""),
        ("expect", ""),
        ("expires", ""),
        ("from", ""),
        ("host", ""),
        ("if-match", ""),
        ("if-modified-since", ""),
        ("if-none-match", ""),
        ("if-range", ""),
        ("if-unmodified-since", ""),
        ("last-modified", ""),
        ("link", ""),
        ("location", ""),
        ("max-forwards", ""),
        ("proxy-authenticate", ""),
        ("proxy-authorization", ""),
        ("range", ""),
        ("referer", ""),
        ("refresh", ""),
        ("retry-after", ""),
        ("server", ""),
        ("set-cookie", ""),
        ("strict-transport-security", ""),
        ("transfer-encoding", ""),
        ("user-agent", ""),
        ("vary", ""),
        ("via", ""),
        ("www-authenticate", ""),
    )
)
_STATIC = len(STATIC_TABLE)
_STATIC_NAMES: dict[bytes, int] = {}
for _i, (_name, _) in enumerate(STATIC_TABLE, 1):
    _STATIC_NAMES.setdefault(_name, _i)

ENTRY_OVERHEAD = 32
"""What an entry costs in the table beyond its name and value (RFC 7541 section 4.1)."""
_KEPT_BLOCKS = 64
"""At most this many decoded blocks are kept (a client varies a handful of fields at most)."""


class HpackError(Exception):
    """A header block that cannot be decoded: the connection's state is lost (COMPRESSION_ERROR)."""


class Decoder:
    """Decodes the header blocks of one connection, in the order they arrive.

    ``max_table_size`` is the table size the server announced (SETTINGS_HEADER_TABLE_SIZE);
    ``max_list`` bounds the decoded header list (names, values and 32 bytes a field, as
    SETTINGS_MAX_HEADER_LIST_SIZE counts), and so what a small block of indexed fields can
    expand to; a block over it is an error.
    """

    def __init__(self, max_table_size: int = 4096, max_list: int = 65536) -> None:
        self.max_table_size = max_table_size
        self.table_size = max_table_size
        self.max_list = max_list
        self._dynamic: deque[Field] = deque()
        self._size = 0
        self._kept: dict[bytes, list[Field]] = {}

    def decode(self, block: bytes) -> list[Field]:
        """The block's fields, in order (the list may be shared: do not change it)."""
        kept = self._kept.get(block)
        if kept is not None:
            return kept
        fields, changed = self._decode(block)
        if changed:
            self._kept.clear()
        elif len(self._kept) < _KEPT_BLOCKS:
            self._kept[block] = fields
        return fields

    def _decode(self, data: bytes) -> tuple[list[Field], bool]:
        fields: list[Field] = []
        changed = False
        pos, end = 0, len(data)
        size = 0  # of the header list so far
        updates = 0
        while pos < end:
            if size > self.max_list:
                raise HpackError(f"a header list over {self.max_list} bytes")
            first = data[pos]
            if first & 0x80:  # indexed field
                index, pos = _integer(data, pos, 7)
                fields.append(self._field(index))
            elif first & 0x40:  # literal, added to the table
                name, value, pos = self._literal(data, pos, 6)
                fields.append((name, value))
                self._add(name, value)
                changed = True
            elif first & 0x20:  # table size update (at most two, before any field)
                if fields:
                    raise HpackError("a table size update after a field")
                updates += 1
                if updates > 2:
                    raise HpackError("more than two table size updates in a block")
                new_size, pos = _integer(data, pos, 5)
                if new_size > self.max_table_size:
                    raise HpackError(
                        f"table size {new_size} over the {self.max_table_size} allowed"
                    )
                self.table_size = new_size
                self._evict()
                changed = True
                continue
            else:  # literal, not indexed (0000) or never indexed (0001)
                name, value, pos = self._literal(data, pos, 4)
                fields.append((name, value))
            size += len(fields[-1][0]) + len(fields[-1][1]) + ENTRY_OVERHEAD
        if size > self.max_list:
            raise HpackError(f"a header list over {self.max_list} bytes")
        return fields, changed

    def _field(self, index: int) -> Field:
        if index == 0:
            raise HpackError("index 0")
        if index <= _STATIC:
            return STATIC_TABLE[index - 1]
        try:
            return self._dynamic[index - _STATIC - 1]
        except IndexError:
            raise HpackError(f"index {index} is not in the table") from None

    def _literal(self, data: bytes, pos: int, prefix: int) -> tuple[bytes, bytes, int]:
        index, pos = _integer(data, pos, prefix)
        if index:
            name = self._field(index)[0]
        else:
            name, pos = self._string(data, pos)
        value, pos = self._string(data, pos)
        return name, value, pos

    def _string(self, data: bytes, pos: int) -> tuple[bytes, int]:
        if pos >= len(data):
            raise HpackError("a block that ends inside a field")
        huffman = data[pos] & 0x80
        length, pos = _integer(data, pos, 7)
        if length > self.max_list:
            raise HpackError(f"a string of {length} bytes (the limit is {self.max_list})")
        end = pos + length
        if end > len(data):
            raise HpackError("a string that runs past the block")
        raw = data[pos:end]
        if huffman:
            try:
                raw = decode_huffman(raw)
            except HPACKDecodingError as exc:
                raise HpackError(f"bad Huffman code: {exc}") from None
        return bytes(raw), end

    def _add(self, name: bytes, value: bytes) -> None:
        size = len(name) + len(value) + ENTRY_OVERHEAD
        if size > self.table_size:  # an entry larger than the table empties it (section 4.4)
            self._dynamic.clear()
            self._size = 0
            return
        self._dynamic.appendleft((name, value))
        self._size += size
        self._evict()

    def _evict(self) -> None:
        while self._size > self.table_size:
            name, value = self._dynamic.pop()
            self._size -= len(name) + len(value) + ENTRY_OVERHEAD


def _integer(data: bytes, pos: int, prefix: int) -> tuple[int, int]:
    """The integer of ``prefix`` bits at ``data[pos]`` and its continuation bytes; the position
    after it."""
    mask = (1 << prefix) - 1
    value = data[pos] & mask
    pos += 1
    if value < mask:
        return value, pos
    shift = 0
    while True:
        if pos >= len(data):
            raise HpackError("a block that ends inside an integer")
        byte = data[pos]
        pos += 1
        value += (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7
        if shift > 28:  # 2^35: no length, index or size is this large
            raise HpackError("an integer too large")


def encode_integer(value: int, prefix: int, first: int = 0) -> bytes:
    """``value`` in ``prefix`` bits of a first byte carrying ``first`` in its other bits."""
    mask = (1 << prefix) - 1
    if value < mask:
        return bytes([first | value])
    out = bytearray([first | mask])
    value -= mask
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def encode(fields: list[Field] | tuple[Field, ...]) -> bytes:
    """A header block of literals without indexing (``:status: 200`` is the one indexed field)."""
    out = bytearray()
    for name, value in fields:
        if name == b":status" and value == b"200":
            out.append(0x88)
            continue
        index = _STATIC_NAMES.get(name, 0)
        out += encode_integer(index, 4)
        if not index:
            out += encode_integer(len(name), 7) + name
        out += encode_integer(len(value), 7) + value
    return bytes(out)
