/* sysfs_open_tp.bpf.c: who opens the PCI driver-control files for writing (open-only variant).
 *
 * Purpose   The cheapest attribution a kernel without kprobes allows: every open(O_WRONLY |
 *           O_RDWR) of a file whose name is a control file's (driver_override, bind, unbind,
 *           drivers_probe, new_id, remove_id, remove, reset, sriov_numvfs,
 *           sriov_drivers_autoprobe, rescan), with pid, tid, comm, cgroup id, parent, the path as
 *           given and the open's result (fd or -errno). The value written and the write's result
 *           are NOT seen: user space recovers what it can afterwards (driver_override,
 *           sriov_numvfs and sriov_drivers_autoprobe read back) and marks it recovered.
 * Hooks     syscall tracepoints sys_enter/sys_exit of openat, openat2 and (where it exists) open,
 *           chdir and fchdir (relative paths); tracepoint sched:sched_process_fork (parents).
 *           No hook runs on write(2) or on any other syscall.
 * Fallbacks The default of tracepoint mode (kernels without kprobes; kprobe mode,
 *           sysfs_store_kprobe.bpf.c, is preferred when it exists). `[sources.ebpf]
 *           tracepoint_variant = "complete"` loads sysfs_write_tp.bpf.c instead, which also
 *           reads every value and result, at about 1.5x on unrelated writes. The device a
 *           bind/unbind/drivers_probe/new_id open was about is recovered by the core from the
 *           kernel's bind/unbind uevent that follows.
 * Kernel    >= 5.8 (ring buffer). Reads no kernel struct: tracepoint arguments and helpers only.
 * Overhead  Any enabled syscall tracepoint moves every syscall onto the slow path: an unrelated
 *           1-byte write measured 1.23x here (+46 ns); opens for writing copy and check a path.
 */
#include <uapi/linux/bpf.h>
#include "vfiowatch.h"
#include "vfw_classify.h"

#ifndef FILTER_TGID
#define FILTER_TGID 0
#endif
#define AT_FDCWD_ -100
#define NR_OPEN 1
#define NR_CHDIR 2
#define NR_FCHDIR 3

struct pending {
	__u32 nr;
	__u32 control;
	__u32 flags;
	__s32 dirfd;
	__u32 truncated;
	__u32 pad;
	char path[VFW_PATH_LEN];
};

BPF_HASH(pending, __u32, struct pending, 4096);
BPF_PERCPU_ARRAY(scratch, struct pending, 1);
BPF_PERCPU_ARRAY(lost, __u64, 2); /* [0] ring buffer full, [1] tracking map full */
BPF_TABLE("lru_hash", __u32, __u32, ppids, 16384);
BPF_RINGBUF_OUTPUT(events, 256); /* 1 MiB: ~2,200 records, a burst of 1,000 opens from 10 processes fits */

static __always_inline void count_lost(int why)
{
	__u64 *n = lost.lookup(&why);
	if (n)
		*n += 1;
}

static __always_inline int on_open(int dirfd, const char *upath, __u32 flags)
{
	__u64 id = bpf_get_current_pid_tgid();
	if (FILTER_TGID && (id >> 32) == FILTER_TGID)
		return 0;
	if ((flags & 3) == 0)
		return 0;
	int zero = 0;
	struct pending *p = scratch.lookup(&zero);
	if (!p)
		return 0;
	int len = bpf_probe_read_user_str(p->path, sizeof(p->path), upath);
	if (len <= 0)
		return 0;
	__u32 ctl = classify(p->path, len);
	if (ctl == VFW_CTL_NONE)
		return 0;
	p->nr = NR_OPEN;
	p->control = ctl;
	p->flags = flags;
	p->dirfd = dirfd;
	p->truncated = len >= VFW_PATH_LEN ? 1 : 0;
	__u32 tid = (__u32)id;
	if (pending.update(&tid, p))
		count_lost(1);
	return 0;
}

static __always_inline int on_exit(long ret)
{
	__u64 id = bpf_get_current_pid_tgid();
	__u32 tid = (__u32)id;
	__u32 tgid = id >> 32;
	struct pending *p = pending.lookup(&tid);
	if (!p)
		return 0;
	__u32 kind = p->nr == NR_OPEN ? (ret >= 0 ? VFW_KIND_OPEN : VFW_KIND_OPEN_FAIL)
				       : VFW_KIND_CHDIR;
	if (kind == VFW_KIND_CHDIR && ret != 0)
		goto out;
	struct vfw_record *r = events.ringbuf_reserve(sizeof(struct vfw_record));
	if (!r) {
		count_lost(0);
		goto out;
	}
	__u32 *pp = ppids.lookup(&tgid);
	r->ts_ns = bpf_ktime_get_ns();
	r->cgroup_id = bpf_get_current_cgroup_id();
	r->result = ret;
	r->kind = kind;
	r->control = p->control;
	r->pid = tgid;
	r->tid = tid;
	r->ppid = pp ? *pp : 0;
	r->fd = ret >= 0 && p->nr == NR_OPEN ? (int)ret : -1;
	r->dirfd = p->dirfd;
	r->flags = p->flags;
	r->count = 0;
	r->value_len = 0;
	r->syscall_nr = 0;
	r->truncated = p->truncated;
	bpf_get_current_comm(r->comm, sizeof(r->comm));
	r->value[0] = 0;
	r->name[0] = 0;
	r->bus[0] = 0;
	bpf_probe_read_kernel(r->path, sizeof(r->path), p->path);
	events.ringbuf_submit(r, 0);
out:
	pending.delete(&tid);
	return 0;
}

TRACEPOINT_PROBE(syscalls, sys_enter_openat)
{
	return on_open((int)args->dfd, (const char *)args->filename, (__u32)args->flags);
}
TRACEPOINT_PROBE(syscalls, sys_exit_openat) { return on_exit(args->ret); }

TRACEPOINT_PROBE(syscalls, sys_enter_openat2)
{
	__u64 flags = 0; /* struct open_how starts with __u64 flags (uapi) */
	bpf_probe_read_user(&flags, sizeof(flags), (void *)args->how);
	return on_open((int)args->dfd, (const char *)args->filename, (__u32)flags);
}
TRACEPOINT_PROBE(syscalls, sys_exit_openat2) { return on_exit(args->ret); }

#ifdef HAVE_SYS_OPEN /* x86_64 has open(2); arm64 only openat */
TRACEPOINT_PROBE(syscalls, sys_enter_open)
{
	return on_open(AT_FDCWD_, (const char *)args->filename, (__u32)args->flags);
}
TRACEPOINT_PROBE(syscalls, sys_exit_open) { return on_exit(args->ret); }
#endif

static __always_inline int on_cwd(__u32 nr, const char *upath, int fd)
{
	__u64 id = bpf_get_current_pid_tgid();
	if (FILTER_TGID && (id >> 32) == FILTER_TGID)
		return 0;
	int zero = 0;
	struct pending *p = scratch.lookup(&zero);
	if (!p)
		return 0;
	p->nr = nr;
	p->control = VFW_CTL_NONE;
	p->flags = 0;
	p->dirfd = fd;
	p->truncated = 0;
	p->path[0] = 0;
	if (upath && bpf_probe_read_user_str(p->path, sizeof(p->path), upath) <= 0)
		return 0;
	__u32 tid = (__u32)id;
	if (pending.update(&tid, p))
		count_lost(1);
	return 0;
}

TRACEPOINT_PROBE(syscalls, sys_enter_chdir)
{
	return on_cwd(NR_CHDIR, (const char *)args->filename, AT_FDCWD_);
}
TRACEPOINT_PROBE(syscalls, sys_exit_chdir) { return on_exit(args->ret); }
TRACEPOINT_PROBE(syscalls, sys_enter_fchdir) { return on_cwd(NR_FCHDIR, 0, (int)args->fd); }
TRACEPOINT_PROBE(syscalls, sys_exit_fchdir) { return on_exit(args->ret); }

TRACEPOINT_PROBE(sched, sched_process_fork)
{
	__u32 parent = bpf_get_current_pid_tgid() >> 32;
	__u32 child = args->child_pid;
	ppids.update(&child, &parent);
	return 0;
}
