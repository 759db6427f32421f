/* vfw_classify.h: the in-kernel basename check shared by the tracepoint-mode probes.
 *
 * classify(path, len) names the control file whose name is the path's last component, or
 * VFW_CTL_NONE. Only names are compared: user space resolves the path and keeps only sysfs.
 */
#ifndef VFW_CLASSIFY_H
#define VFW_CLASSIFY_H

#include "vfiowatch.h"

#define BASENAME_MAX 24 /* "sriov_drivers_autoprobe" is 23 */
#if VFW_PATH_LEN != 256
#error "bounded() masks indexes with 255: keep VFW_PATH_LEN at 256"
#endif

/* An index the verifier can see is < VFW_PATH_LEN: clang drops a plain `& mask` it can prove
 * redundant, and the verifier, which cannot, then rejects the access. */
static __always_inline unsigned int bounded(int i)
{
	unsigned int m = (unsigned int)i;
	asm volatile("%0 &= 255" : "+r"(m));
	return m;
}

/* Byte compare of a basename with a literal (clang turns __builtin_memcmp into a libcall). */
static __always_inline int str_eq(const char *a, const char *lit, int n)
{
#pragma unroll
	for (int i = 0; i < BASENAME_MAX; i++) {
		if (i >= n)
			break;
		if (a[i] != lit[i])
			return 0;
	}
	return 1;
}

/* Control file named by the last path component of `p` (len includes the NUL). */
static __always_inline __u32 classify(const char *p, int len)
{
	char bn[BASENAME_MAX];
	int end = len - 1; /* index of the NUL */
	int start = -1;
	int i;

	if (end <= 0 || end >= VFW_PATH_LEN)
		return VFW_CTL_NONE;
#pragma unroll
	for (i = 1; i <= BASENAME_MAX; i++) {
		int idx = end - i;
		if (idx < 0) {
			start = 0;
			break;
		}
		if (p[bounded(idx)] == '/') {
			start = idx + 1;
			break;
		}
	}
	if (start < 0)
		return VFW_CTL_NONE;
	int n = end - start;
#pragma unroll
	for (i = 0; i < BASENAME_MAX; i++)
		bn[i] = (i < n) ? p[bounded(start + i)] : 0;

	/* if-chains, not switch: some clang versions emit jump tables the verifier rejects */
	if (n == 4 && str_eq(bn, "bind", 4)) return VFW_CTL_BIND;
	if (n == 5 && str_eq(bn, "reset", 5)) return VFW_CTL_RESET;
	if (n == 6) {
		if (str_eq(bn, "unbind", 6)) return VFW_CTL_UNBIND;
		if (str_eq(bn, "new_id", 6)) return VFW_CTL_NEW_ID;
		if (str_eq(bn, "remove", 6)) return VFW_CTL_REMOVE;
		if (str_eq(bn, "rescan", 6)) return VFW_CTL_RESCAN;
	}
	if (n == 9 && str_eq(bn, "remove_id", 9)) return VFW_CTL_REMOVE_ID;
	if (n == 12 && str_eq(bn, "sriov_numvfs", 12)) return VFW_CTL_SRIOV_NUMVFS;
	if (n == 13 && str_eq(bn, "drivers_probe", 13)) return VFW_CTL_DRIVERS_PROBE;
	if (n == 15 && str_eq(bn, "driver_override", 15)) return VFW_CTL_DRIVER_OVERRIDE;
	if (n == 23 && str_eq(bn, "sriov_drivers_autoprobe", 23))
		return VFW_CTL_SRIOV_DRIVERS_AUTOPROBE;
	return VFW_CTL_NONE;
}

#endif /* VFW_CLASSIFY_H */
