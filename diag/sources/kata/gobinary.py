"""Provides a reader of Go executables: build information (as `go version -m`) and Kata's version.

Reads the file (mmap, read-only); never runs it. What it gives:

- The Go build information from `.go.buildinfo`, exactly as `go version -m` finds it (Go >= 1.18
  inline strings, and the older pointer form): the Go version, the main package `path`, the
  main module, dependencies and the build settings (`-ldflags`, `vcs.revision`, ...).
- Kata's version. Kata does not pass it with `-ldflags -X` (its Makefile gives `-ldflags` only
  `-w -s` when STRIP=yes, and `-X main.GitCommit=` to kata-monitor): it generates
  `pkg/katautils/config-settings.go` from `.in` with `var VERSION = "<VERSION file>"` and
  `var COMMIT = "<git commit>"` (src/runtime/Makefile, GENERATED_FILES). So the version is a
  statically initialised Go string variable: a (pointer, length) pair in `.data` pointing at
  the bytes in `.rodata`. With a symbol table the pair is found by its symbol
  `.../pkg/katautils.VERSION` (exact). Stripped (`-s`), the agent looks in `.data` for string
  pairs holding a version number next to the pair holding Kata's COMMIT (40 hex digits) or
  its default configuration paths, the neighbours config-settings.go declares with it
  (heuristic, said so).
- A PIE's pointers are filled by the dynamic loader; their link-time values are read from
  `.rela.dyn` (R_*_RELATIVE addends), so PIE and static builds read the same.

Not Go (no `.go.buildinfo`, e.g. the runtime-rs shim, written in Rust): `is_go` is False.
"""

from __future__ import annotations

import mmap
import os
import re
import struct
from dataclasses import dataclass, field

BUILDINFO_MAGIC = b"\xff Go buildinf:"
KATA_MODULES = ("github.com/kata-containers/kata-containers/src/runtime",
                "github.com/kata-containers/runtime")
KATA_VERSION_SYMBOLS = tuple(f"{m}/pkg/katautils.VERSION" for m in KATA_MODULES)
KATA_COMMIT_SYMBOLS = tuple(f"{m}/pkg/katautils.COMMIT" for m in KATA_MODULES)
MAX_FILE_BYTES = 1 << 30
_SEMVER = re.compile(rb"^\d{1,3}\.\d{1,3}\.\d{1,3}(?:-[0-9A-Za-z.]{1,20})?$")
_COMMIT = re.compile(rb"^[0-9a-f]{40}(?:-dirty)?$")
_KATA_NEIGHBOURS = (b"/etc/kata-containers/configuration.toml",)
_RELATIVE = {62: 8, 183: 1027, 3: 8, 40: 23, 243: 3, 21: 22, 22: 12}
"""e_machine -> R_<arch>_RELATIVE: x86-64, aarch64, i386, arm, riscv, ppc64, s390x."""


class NotElf(ValueError):
    """The file is not an ELF executable this reader understands."""


@dataclass(frozen=True, slots=True)
class _Section:
    name: str
    type: int
    addr: int
    offset: int
    size: int
    link: int
    entsize: int


@dataclass(slots=True)
class _Elf:
    buf: mmap.mmap | bytes
    bits: int
    endian: str
    machine: int
    sections: list[_Section]
    segments: list[tuple[int, int, int, int]]
    """(vaddr, offset, filesz, flags) of PT_LOAD segments."""
    _relocs: dict[int, int] | None = None

    @property
    def ptr(self) -> int:
        return self.bits // 8

    def section(self, name: str) -> _Section | None:
        return next((s for s in self.sections if s.name == name), None)

    def offset_of(self, vaddr: int) -> int | None:
        for va, off, size, _ in self.segments:
            if va <= vaddr < va + size:
                return off + (vaddr - va)
        return None

    def read_ptr(self, off: int) -> int:
        fmt = self.endian + ("Q" if self.bits == 64 else "I")
        return int(struct.unpack_from(fmt, self.buf, off)[0])

    def relocs(self) -> dict[int, int]:
        """vaddr -> addend of every RELATIVE relocation (how a PIE's pointers are filled)."""
        if self._relocs is None:
            out: dict[int, int] = {}
            want = _RELATIVE.get(self.machine)
            for s in self.sections:
                if s.type != 4 or want is None:  # SHT_RELA
                    continue
                ent = 24 if self.bits == 64 else 12
                fmt = self.endian + ("QQq" if self.bits == 64 else "IIi")
                for i in range(s.size // ent):
                    r_off, r_info, addend = struct.unpack_from(fmt, self.buf, s.offset + i * ent)
                    rtype = r_info & 0xFFFFFFFF if self.bits == 64 else r_info & 0xFF
                    if rtype == want:
                        out[r_off] = addend
            self._relocs = out
        return self._relocs

    def pointer_at(self, vaddr: int) -> int | None:
        """The pointer stored at vaddr as the program sees it (relocation applied)."""
        off = self.offset_of(vaddr)
        if off is None:
            return None
        value = self.read_ptr(off)
        if value == 0:
            value = self.relocs().get(vaddr, 0)
        return value

    def string_at(self, vaddr: int, limit: int = 4096) -> bytes | None:
        """The Go string whose header (pointer, length) sits at vaddr."""
        p = self.pointer_at(vaddr)
        hdr = self.offset_of(vaddr)
        if p is None or hdr is None:
            return None
        n = self.read_ptr(hdr + self.ptr)
        if not 0 <= n <= limit:
            return None
        off = self.offset_of(p)
        if off is None or off + n > len(self.buf):
            return None
        return bytes(self.buf[off:off + n])


def _parse_elf(buf: mmap.mmap | bytes) -> _Elf:
    if len(buf) < 64 or buf[:4] != b"\x7fELF":
        raise NotElf("not an ELF file")
    bits = {1: 32, 2: 64}.get(buf[4])
    endian = {1: "<", 2: ">"}.get(buf[5])
    if bits is None or endian is None:
        raise NotElf("unknown ELF class or byte order")
    if bits == 64:
        (_t, machine, _v, _e, phoff, shoff, _f, _eh, phentsize, phnum, shentsize, shnum,
         shstrndx) = struct.unpack_from(endian + "HHIQQQIHHHHHH", buf, 16)
    else:
        (_t, machine, _v, _e, phoff, shoff, _f, _eh, phentsize, phnum, shentsize, shnum,
         shstrndx) = struct.unpack_from(endian + "HHIIIIIHHHHHH", buf, 16)
    segments = []
    for i in range(min(phnum, 256)):
        o = phoff + i * phentsize
        if o + phentsize > len(buf):
            break
        if bits == 64:
            p_type, p_flags, p_off, p_va, _pa, p_filesz = struct.unpack_from(endian + "IIQQQQ", buf, o)
        else:
            p_type, p_off, p_va, _pa, p_filesz, _m, p_flags = struct.unpack_from(endian + "IIIIIII", buf, o)
        if p_type == 1:
            segments.append((p_va, p_off, p_filesz, p_flags))
    raw: list[tuple[int, int, int, int, int, int, int]] = []
    for i in range(min(shnum, 65536)):
        o = shoff + i * shentsize
        if o + shentsize > len(buf):
            break
        if bits == 64:
            nm, st, _fl, addr, off, size, link, _info, _al, entsize = struct.unpack_from(
                endian + "IIQQQQIIQQ", buf, o)
        else:
            nm, st, _fl, addr, off, size, link, _info, _al, entsize = struct.unpack_from(
                endian + "IIIIIIIIII", buf, o)
        raw.append((nm, st, addr, off, size, link, entsize))
    names_off = raw[shstrndx][3] if 0 <= shstrndx < len(raw) else None
    sections = []
    for nm, st, addr, off, size, link, entsize in raw:
        name = ""
        if names_off is not None:
            end = buf.find(b"\x00", names_off + nm)
            name = bytes(buf[names_off + nm:end]).decode("ascii", "replace") if end >= 0 else ""
        if st != 8 and off + size > len(buf):  # SHT_NOBITS has no bytes in the file
            continue
        sections.append(_Section(name, st, addr, off, size, link, entsize))
    return _Elf(buf, bits, endian, machine, sections, segments)


@dataclass(frozen=True, slots=True)
class GoBuildInfo:
    """`go version -m` of one file, plus Kata's version when the file is Kata's Go runtime."""

    is_go: bool
    go_version: str = ""
    path: str = ""
    """Main package path (`.../src/runtime/cmd/containerd-shim-kata-v2`)."""
    main_module: str = ""
    main_version: str = ""
    settings: tuple[tuple[str, str], ...] = ()
    deps: tuple[tuple[str, str], ...] = ()
    kata_version: str = ""
    kata_commit: str = ""
    kata_how: str = ""
    """How the Kata version was found: `symbol <name>`, or the heuristic's description."""
    notes: tuple[str, ...] = field(default=())

    @property
    def is_kata(self) -> bool:
        return any(self.main_module.startswith(m) or self.path.startswith(m) for m in KATA_MODULES)

    def setting(self, key: str) -> str:
        return next((v for k, v in self.settings if k == key), "")


def _uvarint(buf: bytes | mmap.mmap, off: int) -> tuple[int, int]:
    x = shift = 0
    for i in range(10):
        b = buf[off + i]
        x |= (b & 0x7F) << shift
        if b < 0x80:
            return x, off + i + 1
        shift += 7
    raise NotElf("bad varint in .go.buildinfo")


def _buildinfo_strings(elf: _Elf) -> tuple[str, str] | None:
    sec = elf.section(".go.buildinfo")
    if sec is not None:
        start = sec.offset
    else:  # section headers stripped: search the data segments as `go version` does
        start = -1
        for _va, off, size, flags in elf.segments:
            if flags & 2:  # PF_W
                pos = elf.buf.find(BUILDINFO_MAGIC, off, off + size)
                if pos >= 0:
                    start = pos
                    break
        if start < 0:
            return None
    if bytes(elf.buf[start:start + 14]) != BUILDINFO_MAGIC:
        return None
    ptrsize, flags = elf.buf[start + 14], elf.buf[start + 15]
    if flags & 2:  # Go >= 1.18: two varint-prefixed strings at offset 32
        n, off = _uvarint(elf.buf, start + 32)
        vers = bytes(elf.buf[off:off + n])
        n2, off2 = _uvarint(elf.buf, off + n)
        mod = bytes(elf.buf[off2:off2 + n2])
    else:  # older: pointers to Go string headers
        endian = ">" if flags & 1 else "<"
        fmt = endian + ("Q" if ptrsize == 8 else "I")
        vptr = struct.unpack_from(fmt, elf.buf, start + 16)[0]
        mptr = struct.unpack_from(fmt, elf.buf, start + 16 + ptrsize)[0]
        vers = elf.string_at(vptr) or b""
        mod = elf.string_at(mptr, limit=1 << 20) or b""
    if len(mod) >= 33 and mod[-17:-16] == b"\n":  # 16-byte sentinels around modinfo
        mod = mod[16:-16]
    return vers.decode("utf-8", "replace"), mod.decode("utf-8", "replace")


def _symbol(elf: _Elf, names: tuple[str, ...]) -> tuple[str, int] | None:
    symtab = elf.section(".symtab")
    if symtab is None or not 0 <= symtab.link < len(elf.sections):
        return None
    strtab = next((s for s in elf.sections if s is not symtab and s.type == 3 and s.name == ".strtab"), None)
    if strtab is None:
        return None
    ent = 24 if elf.bits == 64 else 16
    for name in names:
        needle = b"\x00" + name.encode() + b"\x00"
        pos = elf.buf.find(needle, strtab.offset, strtab.offset + strtab.size)
        if pos < 0:
            continue
        want = struct.pack(elf.endian + "I", pos + 1 - strtab.offset)
        i = elf.buf.find(want, symtab.offset, symtab.offset + symtab.size)
        while i >= 0:
            if (i - symtab.offset) % ent == 0:
                if elf.bits == 64:
                    value = struct.unpack_from(elf.endian + "Q", elf.buf, i + 8)[0]
                else:
                    value = struct.unpack_from(elf.endian + "I", elf.buf, i + 4)[0]
                return name, int(value)
            i = elf.buf.find(want, i + 1, symtab.offset + symtab.size)
    return None


def _scan_string_vars(elf: _Elf) -> tuple[str, str, str] | None:
    """Stripped binaries: Kata's VERSION among the string variables declared beside its COMMIT."""
    data = elf.section(".data")
    if data is None:
        return None
    ro = [(s.addr, s.addr + s.size) for s in elf.sections if s.name in (".rodata", ".data.rel.ro")]
    step = elf.ptr
    found: list[tuple[int, bytes]] = []
    for off in range(data.offset, data.offset + data.size - 2 * step + 1, step):
        va = data.addr + (off - data.offset)
        n = elf.read_ptr(off + step)
        if not 5 <= n <= 64:
            continue
        p = elf.read_ptr(off) or elf.relocs().get(va, 0)
        if not any(lo <= p < hi for lo, hi in ro):
            continue
        s_off = elf.offset_of(p)
        if s_off is None:
            continue
        found.append((va, bytes(elf.buf[s_off:s_off + n])))
    anchors = [va for va, s in found if _COMMIT.match(s) or s in _KATA_NEIGHBOURS]
    if not anchors:
        return None
    window = 16 * 2 * step
    for va, s in found:
        if _SEMVER.match(s) and any(abs(va - a) <= window for a in anchors):
            commit = next((c.decode() for cva, c in found if _COMMIT.match(c) and abs(cva - va) <= window), "")
            return s.decode(), commit, ("a version string variable in .data beside Kata's COMMIT and "
                                        "configuration paths (stripped binary: no symbol table)")
    return None


def read_elf_info(buf: mmap.mmap | bytes) -> GoBuildInfo:
    """Build information and Kata's version from the bytes of an ELF file (raises NotElf)."""
    elf = _parse_elf(buf)
    strings = _buildinfo_strings(elf)
    if strings is None:
        return GoBuildInfo(is_go=False, notes=("no .go.buildinfo: not a Go program",))
    go_version, modinfo = strings
    path = main_mod = main_ver = ""
    settings: list[tuple[str, str]] = []
    deps: list[tuple[str, str]] = []
    for line in modinfo.splitlines():
        parts = line.split("\t")
        if parts[0] == "path" and len(parts) > 1:
            path = parts[1]
        elif parts[0] == "mod" and len(parts) > 2:
            main_mod, main_ver = parts[1], parts[2]
        elif parts[0] == "dep" and len(parts) > 2:
            deps.append((parts[1], parts[2]))
        elif parts[0] == "build" and len(parts) > 1 and "=" in parts[1]:
            k, v = parts[1].split("=", 1)
            settings.append((k, v.strip('"')))
    info = GoBuildInfo(is_go=True, go_version=go_version, path=path, main_module=main_mod,
                       main_version=main_ver, settings=tuple(settings), deps=tuple(deps))
    if not info.is_kata:
        return info
    version = commit = how = ""
    sym = _symbol(elf, KATA_VERSION_SYMBOLS)
    if sym is not None:
        raw = elf.string_at(sym[1], limit=256)
        if raw is not None:
            version, how = raw.decode("utf-8", "replace"), f"symbol {sym[0].rsplit('/', 1)[-1]}"
            csym = _symbol(elf, KATA_COMMIT_SYMBOLS)
            craw = elf.string_at(csym[1], limit=256) if csym else None
            commit = craw.decode("utf-8", "replace") if craw else ""
    if not version:
        scanned = _scan_string_vars(elf)
        if scanned is not None:
            version, commit, how = scanned
    notes = () if version else ("Kata's Go runtime, but its VERSION variable was not found",)
    return GoBuildInfo(is_go=True, go_version=go_version, path=path, main_module=main_mod,
                       main_version=main_ver, settings=tuple(settings), deps=tuple(deps),
                       kata_version=version, kata_commit=commit, kata_how=how, notes=notes)


def read_fd(fd: int) -> GoBuildInfo:
    """`read_elf_info` of an open file, mapped read-only (raises OSError, NotElf); the caller
    opened it (through HostPaths under --root) and closes it."""
    st = os.fstat(fd)
    if not (st.st_mode & 0o170000) == 0o100000:
        raise NotElf("not a regular file")
    if st.st_size < 64:
        head = os.pread(fd, 4, 0)
        raise NotElf("not an ELF file (too short)" if head == b"\x7fELF" else "not an ELF file")
    if st.st_size > MAX_FILE_BYTES:
        raise NotElf(f"larger than {MAX_FILE_BYTES} bytes, not read")
    with mmap.mmap(fd, st.st_size, prot=mmap.PROT_READ) as m:
        return read_elf_info(m)


def read_file(real_path: str | os.PathLike[str]) -> GoBuildInfo:
    """`read_elf_info` of a file of the agent's own file system (tests; the agent reads host
    files with `read_fd` on a descriptor HostPaths opened)."""
    fd = os.open(real_path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    try:
        return read_fd(fd)
    finally:
        os.close(fd)
