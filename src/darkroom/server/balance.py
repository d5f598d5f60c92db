"""Round-robin of new connections over the workers' SO_REUSEPORT sockets, in the kernel.

Without help the kernel picks a worker's socket by a hash of each connection's addresses:
fine for many clients, lopsided for a few long-lived keep-alive connections (8 connections
split 5/3 more often than 4/4). An eBPF `sk_reuseport` program attached to the group hands
connection n to socket n mod N instead. It is a few instructions, loaded with the bpf()
system call; where that is not allowed (no CAP_BPF, another kernel, another OS) the kernel's
hash stays in charge and the caller is told so.
"""

from __future__ import annotations

import ctypes
import os
import platform
import socket
import struct

_SYS_BPF = {"x86_64": 321, "aarch64": 280}.get(platform.machine())
_MAP_CREATE, _MAP_UPDATE_ELEM, _PROG_LOAD = 0, 2, 5
_ARRAY, _REUSEPORT_SOCKARRAY = 2, 20
_SK_REUSEPORT, _SK_REUSEPORT_SELECT = 21, 39
_SO_ATTACH_REUSEPORT_EBPF = 52
_MAP_LOOKUP_ELEM, _SK_SELECT_REUSEPORT = 1, 82


class Balancer:
    """The counter, the socket array and the program of one reuseport group."""

    def __init__(self, sockets: list[socket.socket]) -> None:
        """Attach round-robin to the group of `sockets` (bound and listening, one port).
        Raises OSError when the kernel refuses."""
        if _SYS_BPF is None:
            raise OSError("bpf() is not available on this platform")
        self._libc = ctypes.CDLL(None, use_errno=True)
        self.size = len(sockets)
        self._counter = self._map(_ARRAY, 1)
        self._sockets = self._map(_REUSEPORT_SOCKARRAY, self.size)
        for index, sock in enumerate(sockets):
            self.place(index, sock)
        program = self._load(_program(self._counter, self._sockets, self.size))
        sockets[0].setsockopt(socket.SOL_SOCKET, _SO_ATTACH_REUSEPORT_EBPF, program)

    def place(self, index: int, sock: socket.socket) -> None:
        """Make `sock` the `index`-th target (a restarted worker's new socket)."""
        key, value = struct.pack("I", index), struct.pack("Q", sock.fileno())
        key_buf, value_buf = ctypes.create_string_buffer(key), ctypes.create_string_buffer(value)
        self._bpf(_MAP_UPDATE_ELEM, struct.pack(
            "IIQQQ", self._sockets, 0, ctypes.addressof(key_buf), ctypes.addressof(value_buf), 0))

    def _map(self, kind: int, entries: int) -> int:
        return self._bpf(_MAP_CREATE, struct.pack("IIIII", kind, 4, 8, entries, 0))

    def _load(self, code: bytes) -> int:
        code_buf, license_buf = ctypes.create_string_buffer(code), ctypes.create_string_buffer(
            b"GPL")
        attr = struct.pack("IIQQIIQII16sII", _SK_REUSEPORT, len(code) // 8,
                           ctypes.addressof(code_buf), ctypes.addressof(license_buf),
                           0, 0, 0, 0, 0, b"darkroom_rr", 0, _SK_REUSEPORT_SELECT)
        return self._bpf(_PROG_LOAD, attr)

    def _bpf(self, command: int, attr: bytes) -> int:
        buffer = ctypes.create_string_buffer(attr, 128)
        result = self._libc.syscall(_SYS_BPF, command, buffer, 128)
        if result < 0:
            errno = ctypes.get_errno()
            raise OSError(errno, f"bpf command {command} refused: {os.strerror(errno)}")
        return result


def _insn(op: int, dst: int = 0, src: int = 0, off: int = 0, imm: int = 0) -> bytes:
    return struct.pack("<BBhi", op, (src << 4) | dst, off, imm)


def _load_map(register: int, fd: int) -> bytes:
    """`register = map fd` (a 16-byte instruction the verifier turns into the map)."""
    return _insn(0x18, register, 1, 0, fd) + _insn(0, 0, 0, 0, 0)


def _program(counter: int, sockets: int, size: int) -> bytes:
    """slot = counter++ % size; select sockets[slot]; pass (the hash decides on a miss)."""
    return b"".join([
        _insn(0xBF, 6, 1),                        # r6 = ctx
        _insn(0x62, 10, 0, -4, 0),                # *(u32 *)(fp - 4) = 0
        _insn(0xBF, 2, 10), _insn(0x07, 2, 0, 0, -4),  # r2 = fp - 4
        _load_map(1, counter),                    # r1 = counter map
        _insn(0x85, 0, 0, 0, _MAP_LOOKUP_ELEM),   # r0 = &counter[0]
        _insn(0x15, 0, 0, 11, 0),                 # if r0 == 0: goto pass
        _insn(0xB7, 1, 0, 0, 1),                  # r1 = 1
        _insn(0xDB, 0, 1, 0, 0x01),               # r1 = atomic fetch-add(*r0, r1)
        _insn(0x97, 1, 0, 0, size),               # r1 %= size
        _insn(0x63, 10, 1, -8),                   # *(u32 *)(fp - 8) = r1
        _insn(0xBF, 1, 6),                        # r1 = ctx
        _load_map(2, sockets),                    # r2 = socket array
        _insn(0xBF, 3, 10), _insn(0x07, 3, 0, 0, -8),  # r3 = fp - 8
        _insn(0xB7, 4, 0, 0, 0),                  # r4 = 0 (flags)
        _insn(0x85, 0, 0, 0, _SK_SELECT_REUSEPORT),
        _insn(0xB7, 0, 0, 0, 1),                  # pass: r0 = SK_PASS
        _insn(0x95),                              # exit
    ])
