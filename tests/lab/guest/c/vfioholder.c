/*
 * Lab VMM stand-in: opens /dev/vfio/<group> with the VFIO ioctls QEMU uses and holds it.
 *
 * Installed in the guest as /opt/kata/bin/qemu-system-x86_64 and started with QEMU's own
 * arguments (`-name sandbox-<sid> -device vfio-pci,host=<BDF>,...`), so its exe, comm
 * ("qemu-system-x86") and cmdline are what Kata's VMM has. For each host=<BDF>: open the
 * container, check the API and type 1 IOMMU, open the group, GROUP_GET_STATUS (viable),
 * GROUP_SET_CONTAINER, SET_IOMMU, GROUP_GET_DEVICE_FD. Creates /run/lab-actor-<pid>.done,
 * then holds every fd until SIGTERM.
 */
#include <fcntl.h>
#include <libgen.h>
#include <linux/vfio.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

static void die(const char *what, const char *bdf)
{
	fprintf(stderr, "qemu-system-x86_64: -device vfio-pci,host=%s: %s failed\n", bdf, what);
	exit(1);
}

static void hold(const char *bdf)
{
	char link[256], target[256];
	snprintf(link, sizeof link, "/sys/bus/pci/devices/%s/iommu_group", bdf);
	ssize_t n = readlink(link, target, sizeof target - 1);
	if (n < 0)
		die("readlink iommu_group", bdf);
	target[n] = 0;
	char group[300];
	snprintf(group, sizeof group, "/dev/vfio/%s", basename(target));

	int container = open("/dev/vfio/vfio", O_RDWR);
	if (container < 0 || ioctl(container, VFIO_GET_API_VERSION) != VFIO_API_VERSION)
		die("VFIO_GET_API_VERSION", bdf);
	if (!ioctl(container, VFIO_CHECK_EXTENSION, VFIO_TYPE1_IOMMU))
		die("VFIO_CHECK_EXTENSION", bdf);
	int gfd = open(group, O_RDWR);
	if (gfd < 0)
		die("open group", bdf);
	struct vfio_group_status status = { .argsz = sizeof status };
	if (ioctl(gfd, VFIO_GROUP_GET_STATUS, &status) || !(status.flags & VFIO_GROUP_FLAGS_VIABLE))
		die("VFIO_GROUP_GET_STATUS (not viable)", bdf);
	if (ioctl(gfd, VFIO_GROUP_SET_CONTAINER, &container))
		die("VFIO_GROUP_SET_CONTAINER", bdf);
	if (ioctl(container, VFIO_SET_IOMMU, VFIO_TYPE1_IOMMU))
		die("VFIO_SET_IOMMU", bdf);
	int dfd = ioctl(gfd, VFIO_GROUP_GET_DEVICE_FD, bdf);
	if (dfd < 0)
		die("VFIO_GROUP_GET_DEVICE_FD", bdf);
	printf("lab: [%d] holding %s (container %d, group %s fd %d, device fd %d)\n",
	       getpid(), bdf, container, group, gfd, dfd);
	fflush(stdout);
}

int main(int argc, char **argv)
{
	for (int i = 1; i < argc; i++) {
		char *h = strstr(argv[i], "host=");
		if (!h)
			continue;
		char bdf[32];
		snprintf(bdf, sizeof bdf, "%s", h + 5);
		bdf[strcspn(bdf, ",")] = 0;
		hold(bdf);
	}
	char path[64];
	snprintf(path, sizeof path, "/run/lab-actor-%d.done", getpid());
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	if (fd >= 0)
		close(fd);
	for (;;)
		pause();
}
