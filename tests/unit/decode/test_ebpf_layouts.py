"""The ctypes mirrors in diag.sources.ebpf.layouts match probes/vfiowatch.h field by field."""

from __future__ import annotations

import ctypes
import re
from pathlib import Path

import pytest

from diag.sources.ebpf import layouts as L

HEADER = Path(__file__).resolve().parents[3] / "probes" / "vfiowatch.h"
_STRUCT = re.compile(r"struct\s+(\w+)\s*\{(.*?)\};", re.S)
_FIELD = re.compile(r"^\s*(?:const\s+)?([\w ]+?)\s+(\w+)\s*(?:\[(\w+)\])?\s*;", re.M)
_DEFINE = re.compile(r"^#define\s+(VFW_\w+)\s+(-?\d+)", re.M)
_C_TYPES = {
    "__u64": ctypes.c_uint64, "__s64": ctypes.c_int64, "__u32": ctypes.c_uint32,
    "__s32": ctypes.c_int32, "char": ctypes.c_char,
}


def _strip_comments(text: str) -> str:
    return re.sub(r"/\*.*?\*/", "", text, flags=re.S)


def header_structs() -> dict[str, list[tuple[str, str, str | None]]]:
    text = _strip_comments(HEADER.read_text())
    return {m.group(1): _FIELD.findall(m.group(2)) for m in _STRUCT.finditer(text)}


def header_defines() -> dict[str, int]:
    return {k: int(v) for k, v in _DEFINE.findall(HEADER.read_text())}


class TestLayouts:
    def test_every_header_struct_has_a_mirror(self) -> None:
        """Each struct of the shared header is mirrored in layouts.MIRRORS, and nothing else is."""
        assert set(header_structs()) == set(L.MIRRORS)

    @pytest.mark.parametrize("name", sorted(L.MIRRORS))
    def test_field_names_order_and_types_match(self, name: str) -> None:
        """Field names, order, C types and array lengths of the mirror equal the header's."""
        defines = header_defines()
        fields = header_structs()[name]
        mirror = L.MIRRORS[name]._fields_
        assert [f[1] for f in fields] == [m[0] for m in mirror]
        for (ctype, fname, length), (_, mtype) in zip(fields, mirror, strict=True):
            base = _C_TYPES[ctype.split()[-1]]
            if length:
                n = defines[length] if length in defines else int(length)
                assert mtype._type_ is base and mtype._length_ == n, fname
            else:
                assert mtype is base, fname

    def test_constants_match(self) -> None:
        """Every VFW_* constant of the header has the same value in layouts."""
        for name, value in header_defines().items():
            assert getattr(L, name) == value, name

    def test_record_size_is_what_the_probes_send(self) -> None:
        """The record is 472 bytes with no hidden padding (all fields naturally aligned)."""
        assert L.RECORD_SIZE == 472
        assert ctypes.sizeof(L.VfwRecord) == sum(
            ctypes.sizeof(t) for _, t in L.VfwRecord._fields_)
