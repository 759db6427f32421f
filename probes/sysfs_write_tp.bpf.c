/* sysfs_write_tp.bpf.c: who writes the PCI driver-control files, from syscall tracepoints.
 *
 * Purpose   Attribute every write to a sysfs control file that moves a PCI device between
 *           drivers (driver_override, bind, unbind, drivers_probe, new_id, remove_id, remove,
 *           reset, sriov_numvfs, sriov_drivers_autoprobe, rescan): pid, tid, comm, cgroup id,
 *           parent, the path as opened, the value written and the result (bytes or -errno).
 * Hooks     Entry: per-syscall tracepoints syscalls:sys_enter_{openat,openat2,open,chdir,
 *           fchdir,close,dup,dup2,dup3,fcntl}; the kernel tests a bitmap, so write(2) and every
 *           other syscall run no program on entry. An open for writing whose last path component
 *           is a control file's name puts (tgid, fd) in `fds` at the open's exit; dup/dup2/dup3/
 *           fcntl(F_DUPFD) copy it, close drops it.
 *           Exit: one raw_tracepoint sys_exit program for every syscall, which returns after two
 *           array reads unless a tracked call is in flight or a control fd is open somewhere;
 *           then a write/pwrite64/writev on such an fd is reported with the value read from the
 *           caller's buffer (still mapped: the caller has not resumed) and its result.
 *           Tracepoints sched:sched_process_fork (parent of short-lived writers) and
 *           sched_process_exec/exit (forget fds that exec or exit closed, so a reused fd number
 *           is never taken for a control file). chdir/fchdir are reported so that user space can
 *           resolve relative paths of writers that have exited.
 * Fallbacks The opt-in `complete` variant of the fallback for kernels without kprobes
 *           (`[sources.ebpf] tracepoint_variant = "complete"`); the default there is the
 *           cheaper sysfs_open_tp.bpf.c, which sees opens only. Paths are classified by basename only:
 *           user space resolves them (cwd, symlinks) under the root and drops what is not in
 *           sysfs. Not seen: io_uring writes, a control file reached through a symlink whose own
 *           name is not the control file's, paths longer than VFW_PATH_LEN, fds inherited
 *           across fork or passed over unix sockets (kprobe mode sees all of these).
 * Kernel    >= 5.8 (ring buffer, bpf_probe_read_user); x86_64 or arm64. Reads no kernel struct
 *           but struct pt_regs, whose layout is the ptrace ABI (identical in every header
 *           version), so the CI machine's mismatched 6.1 headers are safe.
 * Overhead  Any syscall tracepoint moves every syscall onto the slow path (about +40 ns here);
 *           the sys_exit program adds about +45 ns per syscall on this VM (retpolines, SRSO
 *           return thunks); it is what a failed write's value and errno cost. An unrelated
 *           1-byte write measured 1.53x here (tests/bench; a raw sys_enter program as well
 *           measured 1.66x). Opens for writing copy a path (<= 256 bytes) and check its name.
 */
#include <linux/ptrace.h>
#include <uapi/linux/bpf.h>
#include <asm/unistd.h>
#include "vfiowatch.h"
#include "vfw_classify.h"

#ifndef FILTER_TGID
#define FILTER_TGID 0 /* the agent's own tgid: it only observes, it never appears as a writer */
#endif

#define AT_FDCWD_ -100
#define F_DUPFD_ 0
#define F_DUPFD_CLOEXEC_ 1030
#define O_CLOEXEC_ 02000000 /* x86_64 and arm64 */
#define FD_SCAN 64 /* fds looked at on exec and exit; higher ones wait for user-space GC */
#define PATH_MASK (VFW_PATH_LEN - 1)

#if defined(__TARGET_ARCH_arm64) || defined(__aarch64__)
#define SC_NR(r) ((r)->syscallno)
#define SC_EXIT_ARG0(r) ((r)->orig_x0) /* x0 holds the return value at exit */
#define SC_ARG0(r) ((r)->regs[0])
#define SC_ARG1(r) ((r)->regs[1])
#define SC_ARG2(r) ((r)->regs[2])
#define SC_ARG3(r) ((r)->regs[3])
#else /* x86_64: the syscall ABI's 4th argument is r10, not cx */
#define SC_NR(r) ((r)->orig_ax)
#define SC_EXIT_ARG0(r) ((r)->di)
#define SC_ARG0(r) ((r)->di)
#define SC_ARG1(r) ((r)->si)
#define SC_ARG2(r) ((r)->dx)
#define SC_ARG3(r) ((r)->r10)
#endif

/* What is remembered about a control-file fd. */
struct fdinfo {
	__u32 control;
	__u32 flags;
	__s32 dirfd;
	__u32 truncated;
	char path[VFW_PATH_LEN];
};

struct fdkey {
	__u32 tgid;
	__s32 fd;
};

/* A tracked syscall between its enter and its exit (keyed by tid). */
struct pending {
	__u32 nr;
	__s32 fd;
	__u64 buf;
	__u64 count;
	struct fdinfo fi;
};

/* gate[0]: counters kept by this program, read on every tracked syscall without a helper call.
 * gate[1].nfds: entries of `fds` deleted by user space (fds of exited processes), written only
 * by user space, so that nfds - gate[1].nfds is the live count without a racy reset. */
struct gate {
	__s64 nfds;     /* entries this program put in `fds` minus those it deleted */
	__s64 npending; /* entries in `pending` */
};

BPF_HASH(fds, struct fdkey, struct fdinfo, 4096);
BPF_HASH(pending, __u32, struct pending, 4096);
BPF_ARRAY(gate, struct gate, 2);
BPF_PERCPU_ARRAY(scratch, struct pending, 1);
BPF_PERCPU_ARRAY(lost, __u64, 2); /* [0] ring buffer full, [1] tracking map full */
BPF_TABLE("lru_hash", __u32, __u32, ppids, 16384); /* child tgid -> parent tgid */
BPF_RINGBUF_OUTPUT(events, 256);

static __always_inline struct gate *get_gate(void)
{
	int zero = 0;
	return gate.lookup(&zero);
}

#define LOST_RINGBUF 0
#define LOST_TABLE_FULL 1

static __always_inline void count_lost(int why)
{
	__u64 *n = lost.lookup(&why);
	if (n)
		*n += 1;
}

static __always_inline struct pending *scratch_slot(void)
{
	int zero = 0;
	return scratch.lookup(&zero);
}

static __always_inline void track(__u32 tid, struct pending *p)
{
	struct gate *g = get_gate();
	if (!g)
		return;
	if (pending.update(&tid, p) == 0)
		__sync_fetch_and_add(&g->npending, 1);
	else
		count_lost(LOST_TABLE_FULL);
}

static __always_inline void fd_put(struct fdkey *k, struct fdinfo *fi)
{
	struct gate *g = get_gate();
	if (!g)
		return;
	if (fds.lookup(k)) {
		fds.update(k, fi);
		return;
	}
	if (fds.update(k, fi) == 0)
		__sync_fetch_and_add(&g->nfds, 1);
	else
		count_lost(LOST_TABLE_FULL); /* a control fd we cannot follow: reported, never silent */
}

static __always_inline void fd_drop(struct fdkey *k)
{
	struct gate *g = get_gate();
	if (g && fds.delete(k) == 0)
		__sync_fetch_and_add(&g->nfds, -1);
}

/* Whether any control fd is tracked at all (two array reads, no helper call). */
static __always_inline int live_fds(void)
{
	int one = 1;
	struct gate *g = get_gate();
	struct gate *gc = gate.lookup(&one);
	return g && gc && g->nfds - gc->nfds > 0;
}

/* Forget a process's tracked fds below FD_SCAN (all, or the close-on-exec ones). */
static __always_inline void drop_fds(__u32 tgid, int only_cloexec)
{
#pragma unroll
	for (int i = 0; i < FD_SCAN; i++) {
		struct fdkey k = {.tgid = tgid, .fd = i};
		struct fdinfo *fi = fds.lookup(&k);
		if (fi && (!only_cloexec || (fi->flags & O_CLOEXEC_)))
			fd_drop(&k);
	}
}

/* open/openat/openat2 for writing: remember the path if its basename is a control file. */
static __always_inline int on_open(__u32 nr, __u64 tgid_tid, int dirfd, const char *upath,
				   __u32 flags)
{
	if ((flags & 3) == 0) /* O_RDONLY: reading a control file changes nothing */
		return 0;
	struct pending *p = scratch_slot();
	if (!p)
		return 0;
	int len = bpf_probe_read_user_str(p->fi.path, sizeof(p->fi.path), upath);
	if (len <= 0)
		return 0;
	__u32 ctl = classify(p->fi.path, len);
	if (ctl == VFW_CTL_NONE)
		return 0;
	p->nr = nr;
	p->fd = -1;
	p->buf = 0;
	p->count = 0;
	p->fi.control = ctl;
	p->fi.flags = flags;
	p->fi.dirfd = dirfd;
	p->fi.truncated = (len >= VFW_PATH_LEN) ? 1 : 0;
	track((__u32)tgid_tid, p);
	return 0;
}

#ifdef __NR_open
#define IS_OPEN(nr) ((nr) == __NR_open || (nr) == __NR_openat || (nr) == __NR_openat2)
#else
#define IS_OPEN(nr) ((nr) == __NR_openat || (nr) == __NR_openat2)
#endif
#define IS_WRITE(nr) ((nr) == __NR_write || (nr) == __NR_pwrite64 || (nr) == __NR_writev || \
		      (nr) == __NR_pwritev || (nr) == __NR_pwritev2)

/* if-chains, not switch, throughout: some clang versions emit jump tables the verifier rejects */
static __always_inline int self_or_none(__u64 id)
{
	return FILTER_TGID && (id >> 32) == FILTER_TGID;
}

/* Enter side: per-syscall tracepoints, so unrelated syscalls (write above all) run no program
 * on entry, only the kernel's bitmap test of the enabled syscalls. */
TRACEPOINT_PROBE(syscalls, sys_enter_openat)
{
	__u64 id = bpf_get_current_pid_tgid();
	if (self_or_none(id))
		return 0;
	return on_open(__NR_openat, id, (int)args->dfd, (const char *)args->filename,
		       (__u32)args->flags);
}

TRACEPOINT_PROBE(syscalls, sys_enter_openat2)
{
	__u64 id = bpf_get_current_pid_tgid();
	__u64 how_flags = 0; /* struct open_how starts with __u64 flags (uapi) */
	if (self_or_none(id))
		return 0;
	bpf_probe_read_user(&how_flags, sizeof(how_flags), (void *)args->how);
	return on_open(__NR_openat2, id, (int)args->dfd, (const char *)args->filename,
		       (__u32)how_flags);
}

#ifdef HAVE_SYS_OPEN /* x86_64 has open(2); arm64 only openat */
TRACEPOINT_PROBE(syscalls, sys_enter_open)
{
	__u64 id = bpf_get_current_pid_tgid();
	if (self_or_none(id))
		return 0;
	return on_open(__NR_open, id, AT_FDCWD_, (const char *)args->filename, (__u32)args->flags);
}
#endif

static __always_inline int on_cwd(__u32 nr, const char *upath, int fd)
{
	__u64 id = bpf_get_current_pid_tgid();
	if (self_or_none(id))
		return 0;
	struct pending *p = scratch_slot();
	if (!p)
		return 0;
	p->nr = nr;
	p->fd = fd;
	p->buf = 0;
	p->count = 0;
	p->fi.control = VFW_CTL_NONE;
	p->fi.flags = 0;
	p->fi.dirfd = fd;
	p->fi.truncated = 0;
	p->fi.path[0] = 0;
	if (upath) {
		int len = bpf_probe_read_user_str(p->fi.path, sizeof(p->fi.path), upath);
		if (len <= 0)
			return 0;
		p->fi.truncated = (len >= VFW_PATH_LEN) ? 1 : 0;
	}
	track((__u32)id, p);
	return 0;
}

TRACEPOINT_PROBE(syscalls, sys_enter_chdir)
{
	return on_cwd(__NR_chdir, (const char *)args->filename, AT_FDCWD_);
}

TRACEPOINT_PROBE(syscalls, sys_enter_fchdir) { return on_cwd(__NR_fchdir, 0, (int)args->fd); }

TRACEPOINT_PROBE(syscalls, sys_enter_close)
{
	if (!live_fds()) /* no control fd open anywhere: the common case */
		return 0;
	struct fdkey k = {.tgid = bpf_get_current_pid_tgid() >> 32, .fd = (int)args->fd};
	fd_drop(&k);
	return 0;
}

/* dup2/dup3 are done at enter: the kernel closes newfd first; dup2 onto itself is a no-op. */
static __always_inline int on_dup2(int oldfd, int newfd, int cloexec)
{
	if (!live_fds() || oldfd == newfd)
		return 0;
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	struct fdkey oldk = {.tgid = tgid, .fd = oldfd};
	struct fdkey newk = {.tgid = tgid, .fd = newfd};
	fd_drop(&newk);
	struct fdinfo *fi = fds.lookup(&oldk);
	struct pending *p = scratch_slot();
	if (!fi || !p)
		return 0;
	bpf_probe_read_kernel(&p->fi, sizeof(p->fi), fi);
	p->fi.flags &= ~O_CLOEXEC_; /* the new fd's close-on-exec comes from the call */
	if (cloexec)
		p->fi.flags |= O_CLOEXEC_;
	fd_put(&newk, &p->fi);
	return 0;
}

#ifdef HAVE_SYS_DUP2 /* not on arm64 */
TRACEPOINT_PROBE(syscalls, sys_enter_dup2)
{
	return on_dup2((int)args->oldfd, (int)args->newfd, 0);
}
#endif

TRACEPOINT_PROBE(syscalls, sys_enter_dup3)
{
	return on_dup2((int)args->oldfd, (int)args->newfd, (args->flags & O_CLOEXEC_) != 0);
}

/* dup and fcntl(F_DUPFD*): the new fd is the result, so they are finished at exit. */
static __always_inline int on_dup(__u32 nr, int oldfd, int cloexec)
{
	if (!live_fds())
		return 0;
	__u64 id = bpf_get_current_pid_tgid();
	struct fdkey k = {.tgid = id >> 32, .fd = oldfd};
	struct fdinfo *fi = fds.lookup(&k);
	struct pending *p = scratch_slot();
	if (!fi || !p)
		return 0;
	p->nr = nr;
	p->fd = oldfd;
	p->buf = 0;
	p->count = 0;
	bpf_probe_read_kernel(&p->fi, sizeof(p->fi), fi); /* large copies: a helper, not inline code */
	p->fi.flags &= ~O_CLOEXEC_;
	if (cloexec)
		p->fi.flags |= O_CLOEXEC_;
	track((__u32)id, p);
	return 0;
}

TRACEPOINT_PROBE(syscalls, sys_enter_dup) { return on_dup(__NR_dup, (int)args->fildes, 0); }

TRACEPOINT_PROBE(syscalls, sys_enter_fcntl)
{
	if (args->cmd != F_DUPFD_ && args->cmd != F_DUPFD_CLOEXEC_)
		return 0;
	return on_dup(__NR_fcntl, (int)args->fd, args->cmd == F_DUPFD_CLOEXEC_);
}

static __always_inline void fill_common(struct vfw_record *r, __u64 id, __u32 kind)
{
	__u32 tgid = id >> 32;
	__u32 *pp = ppids.lookup(&tgid);
	r->ts_ns = bpf_ktime_get_ns();
	r->cgroup_id = bpf_get_current_cgroup_id();
	r->kind = kind;
	r->pid = tgid;
	r->tid = (__u32)id;
	r->ppid = pp ? *pp : 0;
	bpf_get_current_comm(r->comm, sizeof(r->comm));
	r->name[0] = 0;
	r->bus[0] = 0;
}

static __always_inline void emit(struct pending *p, __u64 id, __u32 kind, long ret)
{
	struct vfw_record *r = events.ringbuf_reserve(sizeof(struct vfw_record));
	if (!r) {
		count_lost(LOST_RINGBUF);
		return;
	}
	fill_common(r, id, kind);
	r->result = ret;
	r->control = p->fi.control;
	r->fd = p->fd;
	r->dirfd = p->fi.dirfd;
	r->flags = p->fi.flags;
	r->truncated = p->fi.truncated;
	r->syscall_nr = 0;
	r->count = 0;
	r->value_len = 0;
	r->value[0] = 0;
	bpf_probe_read_kernel(r->path, sizeof(r->path), p->fi.path);
	if (kind == VFW_KIND_WRITE) {
		__u64 buf = p->buf;
		__u64 n = p->count;
		r->syscall_nr = p->nr;
		if (p->nr == __NR_writev || p->nr == __NR_pwritev || p->nr == __NR_pwritev2) {
			__u64 iov[2] = {}; /* struct iovec {void *base; size_t len}: the first one */
			bpf_probe_read_user(iov, sizeof(iov), (void *)buf);
			buf = iov[0];
			n = iov[1];
		}
		r->count = n > 0xffffffffULL ? 0xffffffffU : (__u32)n;
		if (n > VFW_VALUE_LEN) {
			n = VFW_VALUE_LEN;
			r->truncated |= 2;
		}
		n &= (VFW_VALUE_LEN * 2 - 1);
		if (n > VFW_VALUE_LEN)
			n = VFW_VALUE_LEN;
		if (n && bpf_probe_read_user(r->value, n, (void *)buf) == 0)
			r->value_len = n;
	}
	events.ringbuf_submit(r, 0);
}

/* Exit side: one raw program for every syscall. It returns after two array reads unless a
 * tracked syscall is in flight or a control fd is open somewhere; only then does it read the
 * registers to see whether this is a write on such an fd (the arguments and the caller's buffer
 * are still there: the caller has not resumed). */
RAW_TRACEPOINT_PROBE(sys_exit)
{
	struct gate *g = get_gate();
	if (!g)
		return 0;
	int open_fds = live_fds();
	if (g->npending <= 0 && !open_fds) /* the common case */
		return 0;
	__u64 id = bpf_get_current_pid_tgid();
	__u32 tid = (__u32)id;
	long ret = (long)ctx->args[1];

	if (g->npending > 0) {
		struct pending *p = pending.lookup(&tid);
		if (p) {
			__u32 nr = p->nr;
			if (IS_OPEN(nr)) {
				if (ret >= 0) {
					struct fdkey k = {.tgid = id >> 32, .fd = (int)ret};
					fd_put(&k, &p->fi);
				} else {
					emit(p, id, VFW_KIND_OPEN_FAIL, ret);
				}
			} else if (nr == __NR_chdir || nr == __NR_fchdir) {
				if (ret == 0)
					emit(p, id, VFW_KIND_CHDIR, ret);
			} else if (ret >= 0) { /* dup, fcntl(F_DUPFD*) */
				struct fdkey k = {.tgid = id >> 32, .fd = (int)ret};
				fd_put(&k, &p->fi);
			}
			if (pending.delete(&tid) == 0)
				__sync_fetch_and_add(&g->npending, -1);
			return 0;
		}
	}
	if (!open_fds || self_or_none(id))
		return 0;
	struct pt_regs regs; /* filled by one helper call */
	if (bpf_probe_read_kernel(&regs, sizeof(regs), (void *)ctx->args[0]))
		return 0;
	long nr = (long)SC_NR(&regs);
	if (!IS_WRITE(nr))
		return 0;
	struct fdkey k = {.tgid = id >> 32, .fd = (int)SC_EXIT_ARG0(&regs)};
	struct fdinfo *fi = fds.lookup(&k);
	if (!fi)
		return 0;
	struct pending *p = scratch_slot();
	if (!p)
		return 0;
	p->nr = nr;
	p->fd = k.fd;
	p->buf = SC_ARG1(&regs); /* (fd, buf | iov, count | iovcnt, ...) */
	p->count = SC_ARG2(&regs);
	bpf_probe_read_kernel(&p->fi, sizeof(p->fi), fi);
	emit(p, id, VFW_KIND_WRITE, ret);
	return 0;
}

TRACEPOINT_PROBE(sched, sched_process_fork)
{
	__u32 parent = bpf_get_current_pid_tgid() >> 32;
	__u32 child = args->child_pid;
	ppids.update(&child, &parent);
	return 0;
}

/* A successful exec closed the close-on-exec fds: forget them, so that a reused fd number in
 * the new program is not taken for a control file. */
TRACEPOINT_PROBE(sched, sched_process_exec)
{
	if (!live_fds())
		return 0;
	drop_fds(bpf_get_current_pid_tgid() >> 32, 1);
	return 0;
}

/* The last thread of a process exited: its fd table is gone. */
TRACEPOINT_PROBE(sched, sched_process_exit)
{
	if (!args->group_dead || !live_fds())
		return 0;
	drop_fds(bpf_get_current_pid_tgid() >> 32, 0);
	return 0;
}
