/* vfiowatch.h: the kernel<->user contract of vfiowatch's eBPF probes.
 *
 * One record layout for every probe (sysfs_write_tp.bpf.c, sysfs_open_tp.bpf.c,
 * sysfs_store_kprobe.bpf.c). The Python side mirrors `struct vfw_record` with ctypes in
 * diag/sources/ebpf/layouts.py; the unit test
 * tests/unit/test_ebpf_layouts.py parses this file and fails when names or order drift.
 * Fixed-width types only, explicit padding, no kernel headers: it must compile in any program.
 */
#ifndef VFIOWATCH_H
#define VFIOWATCH_H

#define VFW_COMM_LEN 16
#define VFW_VALUE_LEN 64   /* BDF, driver name, "8086 10ca", numvfs: all far shorter */
#define VFW_PATH_LEN 256   /* the path as given to open(); user space resolves it */
#define VFW_NAME_LEN 48    /* device or driver name (kprobe mode) */
#define VFW_BUS_LEN 16     /* bus name of a driver or bus attribute (kprobe mode) */

/* record kinds */
#define VFW_KIND_WRITE 1     /* a write(2)-family call on a control file, with its result */
#define VFW_KIND_OPEN_FAIL 2 /* open(O_WRONLY) of a control file that failed (result=-errno) */
#define VFW_KIND_CHDIR 3     /* a successful chdir: lets user space resolve relative paths */
#define VFW_KIND_STORE 4     /* kprobe mode: a sysfs store handler returned */
#define VFW_KIND_OPEN 5      /* open-only variant: a control file opened for writing (result=fd) */

/* control files, classified from the basename (tracepoint mode) or the handler (kprobe mode) */
#define VFW_CTL_NONE 0
#define VFW_CTL_DRIVER_OVERRIDE 1
#define VFW_CTL_UNBIND 2
#define VFW_CTL_BIND 3
#define VFW_CTL_DRIVERS_PROBE 4
#define VFW_CTL_NEW_ID 5
#define VFW_CTL_REMOVE_ID 6
#define VFW_CTL_REMOVE 7
#define VFW_CTL_RESET 8
#define VFW_CTL_SRIOV_NUMVFS 9
#define VFW_CTL_SRIOV_DRIVERS_AUTOPROBE 10
#define VFW_CTL_RESCAN 11

struct vfw_record {
	__u64 ts_ns;          /* bpf_ktime_get_ns(): CLOCK_MONOTONIC */
	__u64 cgroup_id;      /* bpf_get_current_cgroup_id(): cgroup v2 directory inode */
	__s64 result;         /* bytes written, fd opened, 0, or -errno */
	__u32 kind;           /* VFW_KIND_* */
	__u32 control;        /* VFW_CTL_* */
	__u32 pid;            /* tgid of the writer */
	__u32 tid;
	__u32 ppid;           /* parent tgid seen at fork since the probe loaded; 0 if unknown */
	__s32 fd;             /* the written fd (tracepoint mode) */
	__s32 dirfd;          /* openat's dirfd for relative paths (-100 = AT_FDCWD) */
	__u32 flags;          /* open(2) flags */
	__u32 count;          /* bytes the caller asked to write */
	__u32 value_len;      /* bytes captured into value[] (<= VFW_VALUE_LEN) */
	__u32 syscall_nr;     /* the write syscall (write, pwrite64, writev) or 0 */
	__u32 truncated;      /* bit 0: path longer than path[]; bit 1: value longer than value[] */
	char comm[VFW_COMM_LEN];
	char value[VFW_VALUE_LEN];
	char name[VFW_NAME_LEN];  /* kprobe mode: device or driver or bus the handler got */
	char bus[VFW_BUS_LEN];    /* kprobe mode: the driver's bus (driver attrs), else empty */
	char path[VFW_PATH_LEN];  /* tracepoint mode: the path as opened (or chdir'ed) */
};

#endif /* VFIOWATCH_H */
