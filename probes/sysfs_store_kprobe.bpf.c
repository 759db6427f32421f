/* sysfs_store_kprobe.bpf.c: who writes the PCI driver-control files, from the kernel's handlers.
 *
 * Purpose   Attribute every write that reaches a driver-core or PCI sysfs store handler: pid,
 *           tid, comm, cgroup id, parent, the device/driver/bus the handler was given, the value
 *           (the kernel's own copy of the buffer) and the handler's return (bytes or -errno).
 * Hooks     kprobe + kretprobe on each handler, one small program per handler shape:
 *             driver attrs  (struct device_driver *, const char *buf, size_t count):
 *                           bind_store, unbind_store, new_id_store, remove_id_store
 *             bus attrs     (const struct bus_type *, const char *buf, size_t count):
 *                           drivers_probe_store, rescan_store (pci bus rescan)
 *             device attrs  (struct device *, struct device_attribute *, const char *buf,
 *                           size_t count): driver_override_store, remove_store, reset_store,
 *                           dev_rescan_store, sriov_numvfs_store,
 *                           sriov_drivers_autoprobe_store
 *           One entry program per handler (kp_<handler>, which knows its control file) and one
 *           shared return program (kr_store); user space attaches those whose symbol exists.
 *           tracepoint sched:sched_process_fork for the parent of short-lived writers.
 * Fallbacks Kernels without kprobes (CONFIG_KPROBES unset) use sysfs_open_tp.bpf.c (or, opted
 *           into, sysfs_write_tp.bpf.c) instead.
 *           A handler missing from kallsyms is reported by name (`vfiowatch check`, the mode
 *           reason). A name kallsyms lists more than once (static functions of the same name in
 *           other files; kprobes by name refuse them since 6.6) is probed at each address via
 *           tracefs kprobe_events; user space drops records whose device/driver is not in sysfs.
 * Kernel    >= 5.8 (ring buffer). Struct reads: only the pointer at offset 0 of the handler's
 *           first argument, which is the name in all three shapes (device_driver.name,
 *           bus_type.name, device.kobj.name), and for a driver the pointer after it
 *           (device_driver.bus, then bus_type.name at offset 0): the two leading members of
 *           struct device_driver have not moved since 2.6. No CO-RE needed.
 *           Sees every path (symlinks, relative, io_uring, fds passed between processes),
 *           since it hooks below the VFS.
 * Overhead  Nothing on unrelated syscalls: the handlers run only when a control file is
 *           written (a few times per VF move).
 */
#include <linux/ptrace.h>
#include <uapi/linux/bpf.h>
#include "vfiowatch.h"

#ifndef FILTER_TGID
#define FILTER_TGID 0
#endif

struct inflight {
	__u32 control;
	__u32 count;
	__u32 value_len;
	__u32 truncated;
	char value[VFW_VALUE_LEN];
	char name[VFW_NAME_LEN];
	char bus[VFW_BUS_LEN];
};

BPF_HASH(inflight_by_tid, __u32, struct inflight, 4096);
BPF_PERCPU_ARRAY(scratch, struct inflight, 1);
BPF_PERCPU_ARRAY(lost, __u64, 2); /* [0] ring buffer full, [1] tracking map full */
BPF_TABLE("lru_hash", __u32, __u32, ppids, 16384);
BPF_RINGBUF_OUTPUT(events, 64);

#define LOST_RINGBUF 0
#define LOST_TABLE_FULL 1

static __always_inline void count_lost(int why)
{
	__u64 *n = lost.lookup(&why);
	if (n)
		*n += 1;
}

/* obj: the handler's first argument, whose first member is a `const char *` name. */
static __always_inline int enter(void *obj, const char *buf, __u64 count, __u32 control,
				 int is_driver)
{
	__u64 id = bpf_get_current_pid_tgid();
	if (FILTER_TGID && (id >> 32) == FILTER_TGID)
		return 0;
	int zero = 0;
	struct inflight *f = scratch.lookup(&zero);
	if (!f)
		return 0;
	const char *name = 0;
	bpf_probe_read_kernel(&name, sizeof(name), obj);
	f->name[0] = 0;
	if (name)
		bpf_probe_read_kernel_str(f->name, sizeof(f->name), name);
	f->bus[0] = 0;
	if (is_driver) { /* struct device_driver { const char *name; const struct bus_type *bus; */
		void *bus = 0;
		const char *bus_name = 0;
		bpf_probe_read_kernel(&bus, sizeof(bus), (char *)obj + sizeof(void *));
		if (bus)
			bpf_probe_read_kernel(&bus_name, sizeof(bus_name), bus);
		if (bus_name)
			bpf_probe_read_kernel_str(f->bus, sizeof(f->bus), bus_name);
	}
	f->control = control;
	f->count = count > 0xffffffffULL ? 0xffffffffU : (__u32)count;
	f->truncated = count > VFW_VALUE_LEN ? 2 : 0;
	__u64 n = count > VFW_VALUE_LEN ? VFW_VALUE_LEN : count;
	n &= (VFW_VALUE_LEN * 2 - 1);
	if (n > VFW_VALUE_LEN)
		n = VFW_VALUE_LEN;
	f->value_len = 0;
	if (n && bpf_probe_read_kernel(f->value, n, buf) == 0)
		f->value_len = n;
	__u32 tid = (__u32)id;
	if (inflight_by_tid.update(&tid, f))
		count_lost(LOST_TABLE_FULL);
	return 0;
}

/* One entry program per handler, by argument shape. */
#define DRV_ENTRY(fn, ctl) \
	int fn(struct pt_regs *ctx) \
	{ return enter((void *)PT_REGS_PARM1(ctx), (const char *)PT_REGS_PARM2(ctx), \
		       PT_REGS_PARM3(ctx), ctl, 1); }
#define BUS_ENTRY(fn, ctl) \
	int fn(struct pt_regs *ctx) \
	{ return enter((void *)PT_REGS_PARM1(ctx), (const char *)PT_REGS_PARM2(ctx), \
		       PT_REGS_PARM3(ctx), ctl, 0); }
#define DEV_ENTRY(fn, ctl) \
	int fn(struct pt_regs *ctx) \
	{ return enter((void *)PT_REGS_PARM1(ctx), (const char *)PT_REGS_PARM3(ctx), \
		       PT_REGS_PARM4(ctx), ctl, 0); }

DRV_ENTRY(kp_bind_store, VFW_CTL_BIND)
DRV_ENTRY(kp_unbind_store, VFW_CTL_UNBIND)
DRV_ENTRY(kp_new_id_store, VFW_CTL_NEW_ID)
DRV_ENTRY(kp_remove_id_store, VFW_CTL_REMOVE_ID)
BUS_ENTRY(kp_drivers_probe_store, VFW_CTL_DRIVERS_PROBE)
BUS_ENTRY(kp_rescan_store, VFW_CTL_RESCAN)
DEV_ENTRY(kp_driver_override_store, VFW_CTL_DRIVER_OVERRIDE)
DEV_ENTRY(kp_remove_store, VFW_CTL_REMOVE)
DEV_ENTRY(kp_reset_store, VFW_CTL_RESET)
DEV_ENTRY(kp_dev_rescan_store, VFW_CTL_RESCAN)
DEV_ENTRY(kp_sriov_numvfs_store, VFW_CTL_SRIOV_NUMVFS)
DEV_ENTRY(kp_sriov_drivers_autoprobe_store, VFW_CTL_SRIOV_DRIVERS_AUTOPROBE)

/* One return program for all handlers: the entry left what it saw under the tid. */
int kr_store(struct pt_regs *ctx)
{
	__u64 id = bpf_get_current_pid_tgid();
	__u32 tid = (__u32)id;
	__u32 tgid = id >> 32;
	struct inflight *f = inflight_by_tid.lookup(&tid);
	if (!f)
		return 0;
	struct vfw_record *r = events.ringbuf_reserve(sizeof(struct vfw_record));
	if (!r) {
		count_lost(LOST_RINGBUF);
		inflight_by_tid.delete(&tid);
		return 0;
	}
	__u32 *pp = ppids.lookup(&tgid);
	r->ts_ns = bpf_ktime_get_ns();
	r->cgroup_id = bpf_get_current_cgroup_id();
	r->result = (__s64)PT_REGS_RC(ctx);
	r->kind = VFW_KIND_STORE;
	r->control = f->control;
	r->pid = tgid;
	r->tid = tid;
	r->ppid = pp ? *pp : 0;
	r->fd = -1;
	r->dirfd = 0;
	r->flags = 0;
	r->count = f->count;
	r->value_len = f->value_len;
	r->syscall_nr = 0;
	r->truncated = f->truncated;
	bpf_get_current_comm(r->comm, sizeof(r->comm));
	bpf_probe_read_kernel(r->value, sizeof(r->value), f->value);
	bpf_probe_read_kernel(r->name, sizeof(r->name), f->name);
	bpf_probe_read_kernel(r->bus, sizeof(r->bus), f->bus);
	r->path[0] = 0;
	events.ringbuf_submit(r, 0);
	inflight_by_tid.delete(&tid);
	return 0;
}

TRACEPOINT_PROBE(sched, sched_process_fork)
{
	__u32 parent = bpf_get_current_pid_tgid() >> 32;
	__u32 child = args->child_pid;
	ppids.update(&child, &parent);
	return 0;
}
