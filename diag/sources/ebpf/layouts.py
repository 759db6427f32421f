"""Provides ctypes mirrors of the probes' shared header (probes/vfiowatch.h) and its constants.

The unit test tests/unit/decode/test_ebpf_layouts.py parses the header and compares every struct's field
names and order (and the #define constants) with this module, so a change on one side that is
not made on the other fails on any machine, without a kernel.
"""

from __future__ import annotations

import ctypes

VFW_COMM_LEN = 16
VFW_VALUE_LEN = 64
VFW_PATH_LEN = 256
VFW_NAME_LEN = 48
VFW_BUS_LEN = 16

VFW_KIND_WRITE = 1
VFW_KIND_OPEN_FAIL = 2
VFW_KIND_CHDIR = 3
VFW_KIND_STORE = 4
VFW_KIND_OPEN = 5

VFW_CTL_NONE = 0
VFW_CTL_DRIVER_OVERRIDE = 1
VFW_CTL_UNBIND = 2
VFW_CTL_BIND = 3
VFW_CTL_DRIVERS_PROBE = 4
VFW_CTL_NEW_ID = 5
VFW_CTL_REMOVE_ID = 6
VFW_CTL_REMOVE = 7
VFW_CTL_RESET = 8
VFW_CTL_SRIOV_NUMVFS = 9
VFW_CTL_SRIOV_DRIVERS_AUTOPROBE = 10
VFW_CTL_RESCAN = 11

CONTROL_NAMES: dict[int, str] = {
    VFW_CTL_DRIVER_OVERRIDE: "driver_override",
    VFW_CTL_UNBIND: "unbind",
    VFW_CTL_BIND: "bind",
    VFW_CTL_DRIVERS_PROBE: "drivers_probe",
    VFW_CTL_NEW_ID: "new_id",
    VFW_CTL_REMOVE_ID: "remove_id",
    VFW_CTL_REMOVE: "remove",
    VFW_CTL_RESET: "reset",
    VFW_CTL_SRIOV_NUMVFS: "sriov_numvfs",
    VFW_CTL_SRIOV_DRIVERS_AUTOPROBE: "sriov_drivers_autoprobe",
    VFW_CTL_RESCAN: "rescan",
}
"""VFW_CTL_* -> the control file's name, which is also SysfsWriteObserved.control."""

AT_FDCWD = -100


class VfwRecord(ctypes.Structure):
    """`struct vfw_record`: one ring-buffer record, identical for both probe modes."""

    _fields_ = [
        ("ts_ns", ctypes.c_uint64),
        ("cgroup_id", ctypes.c_uint64),
        ("result", ctypes.c_int64),
        ("kind", ctypes.c_uint32),
        ("control", ctypes.c_uint32),
        ("pid", ctypes.c_uint32),
        ("tid", ctypes.c_uint32),
        ("ppid", ctypes.c_uint32),
        ("fd", ctypes.c_int32),
        ("dirfd", ctypes.c_int32),
        ("flags", ctypes.c_uint32),
        ("count", ctypes.c_uint32),
        ("value_len", ctypes.c_uint32),
        ("syscall_nr", ctypes.c_uint32),
        ("truncated", ctypes.c_uint32),
        ("comm", ctypes.c_char * VFW_COMM_LEN),
        ("value", ctypes.c_char * VFW_VALUE_LEN),
        ("name", ctypes.c_char * VFW_NAME_LEN),
        ("bus", ctypes.c_char * VFW_BUS_LEN),
        ("path", ctypes.c_char * VFW_PATH_LEN),
    ]


MIRRORS: dict[str, type[ctypes.Structure]] = {"vfw_record": VfwRecord}
"""Header struct name -> its mirror; the layout test walks this."""

RECORD_SIZE = ctypes.sizeof(VfwRecord)
