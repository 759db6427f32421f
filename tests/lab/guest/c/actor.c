/*
 * Lab actor: a real executable that plays the sysfs steps in $LAB_STEPS, then stays alive.
 *
 * Installed in the guest as /opt/kata/bin/containerd-shim-kata-v2,
 * /usr/local/bin/sriov-network-config-daemon and /usr/sbin/driverctl, so exe, argv[0] and comm ("containerd-shim",
 * cut to 15 characters by the kernel) are what the real processes have. Every write is one
 * open(O_WRONLY) + one write() with no trailing newline, as Kata's Go runtime does it.
 *
 * Steps, ';'-separated: kata38-bind:<bdf>  kata38-restore:<bdf>:<drv>  kata30-bind:<bdf>
 * kata30-restore:<bdf>:<drv>  unbind:<bdf>  override:<bdf>:<value>  clear-override:<bdf>
 * probe:<bdf>  sleep:<s>  netdev-unbind:<ifname>:<bdf> (through /sys/class/net/<ifname>/device/
 * driver/unbind, the link form operators use: sriovnet #26)
 * mark:<name> (creates /run/lab-mark-<name>)  wait:<name> (waits for /run/lab-go-<name>).
 * say:<level>|<msg>|<fields>|<subsystem> appends the line Kata's Go shim logs to syslog
 * (`kata[<pid>]: time="..." level=... msg="..." <fields> name=containerd-shim-v2 pid=<pid>
 * sandbox=$LAB_SANDBOX source=virtcontainers subsystem=...`) to the file $LAB_LOG, if set.
 * When done it creates /run/lab-actor-<pid>.done and sleeps until SIGTERM.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define PCI "/sys/bus/pci"
#define VF_ID "8086 10ca"

static void put(const char *path, const char *value)
{
	int fd = open(path, O_WRONLY);
	int err = 0;
	if (fd < 0) {
		err = errno;
	} else {
		if (write(fd, value, strlen(value)) < 0)
			err = errno;
		close(fd);
	}
	printf("lab: [%d] write %s <- '%s': %s\n", getpid(), path, value,
	       err ? strerror(err) : "ok");
	fflush(stdout);
}

static void putf(const char *value, const char *fmt, const char *a, const char *b)
{
	char path[512];
	snprintf(path, sizeof path, fmt, a, b);
	put(path, value);
}

static void touch(const char *prefix, const char *name)
{
	char path[256];
	snprintf(path, sizeof path, "/run/lab-%s-%s", prefix, name);
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	if (fd >= 0)
		close(fd);
}

/* One line as rsyslog files what Kata's Go shim sends to the `kata` syslog tag (logrus
 * TextFormatter: time, level, msg, then the fields in alphabetical order). */
static void say(char *arg)
{
	const char *log = getenv("LAB_LOG"), *sid = getenv("LAB_SANDBOX");
	char *level = arg, *msg = NULL, *fields = NULL, *sub = NULL;
	if (!log)
		return;
	if ((msg = strchr(level, '|')))
		*msg++ = 0;
	if (msg && (fields = strchr(msg, '|')))
		*fields++ = 0;
	if (fields && (sub = strchr(fields, '|')))
		*sub++ = 0;
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	struct tm tm;
	gmtime_r(&ts.tv_sec, &tm);
	char when[32], host[64] = "localhost";
	strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%S", &tm);
	gethostname(host, sizeof host - 1);
	FILE *fh = fopen(log, "a");
	if (!fh)
		return;
	fprintf(fh, "%s.%06ld+00:00 %s kata[%d]: time=\"%s.%09ldZ\" level=%s msg=\"%s\"%s%s "
		    "name=containerd-shim-v2 pid=%d sandbox=%s source=virtcontainers subsystem=%s\n",
		when, ts.tv_nsec / 1000, host, getpid(), when, ts.tv_nsec, level, msg ? msg : "",
		fields && *fields ? " " : "", fields ? fields : "", getpid(), sid ? sid : "",
		sub ? sub : "device");
	fclose(fh);
}

static void nap(double s)
{
	struct timespec ts = { (time_t)s, (long)((s - (time_t)s) * 1e9) };
	nanosleep(&ts, NULL);
}

static void step(char *op, char *arg)
{
	/* A BDF holds ':' itself: the driver (or value) is what follows the LAST ':'. */
	char *drv = NULL;
	if (arg && (!strcmp(op, "kata38-restore") || !strcmp(op, "kata30-restore") ||
		    !strcmp(op, "override"))) {
		drv = strrchr(arg, ':');
		if (drv)
			*drv++ = 0;
	}
	if (!strcmp(op, "kata38-bind")) {          /* BindDevicetoVFIO, Kata Go >= 3.8 */
		putf("vfio-pci", PCI "/devices/%s/driver_override%s", arg, "");
		putf(arg, PCI "/devices/%s/driver/unbind%s", arg, "");
		put(PCI "/drivers_probe", arg);
	} else if (!strcmp(op, "kata38-restore")) { /* BindDevicetoHost, Kata Go >= 3.8 */
		putf(drv, PCI "/devices/%s/driver_override%s", arg, "");
		putf(arg, PCI "/devices/%s/driver/unbind%s", arg, "");
		put(PCI "/drivers_probe", arg);
	} else if (!strcmp(op, "kata30-bind")) {   /* Kata Go 3.0-3.7 */
		putf(arg, PCI "/devices/%s/driver/unbind%s", arg, "");
		put(PCI "/drivers/vfio-pci/new_id", VF_ID);
		put(PCI "/drivers/vfio-pci/bind", arg);
	} else if (!strcmp(op, "kata30-restore")) {
		putf(arg, PCI "/devices/%s/driver/unbind%s", arg, "");
		put(PCI "/drivers/vfio-pci/remove_id", VF_ID);
		putf(arg, PCI "/drivers/%s/bind%s", drv, "");
	} else if (!strcmp(op, "netdev-unbind")) {
		char *bdf = strchr(arg, ':'); /* an interface name holds no ':' */
		if (!bdf) {
			fprintf(stderr, "lab actor: netdev-unbind:<ifname>:<bdf>\n");
			exit(2);
		}
		*bdf++ = 0;
		putf(bdf, "/sys/class/net/%s/device/driver/unbind%s", arg, "");
	} else if (!strcmp(op, "unbind")) {
		putf(arg, PCI "/devices/%s/driver/unbind%s", arg, "");
	} else if (!strcmp(op, "override")) {
		putf(drv, PCI "/devices/%s/driver_override%s", arg, "");
	} else if (!strcmp(op, "clear-override")) { /* what `driverctl unset-override` writes */
		putf("\n", PCI "/devices/%s/driver_override%s", arg, "");
	} else if (!strcmp(op, "probe")) {
		put(PCI "/drivers_probe", arg);
	} else if (!strcmp(op, "say")) {
		say(arg);
	} else if (!strcmp(op, "sleep")) {
		nap(atof(arg));
	} else if (!strcmp(op, "mark")) {
		touch("mark", arg);
	} else if (!strcmp(op, "wait")) {
		char path[256];
		snprintf(path, sizeof path, "/run/lab-go-%s", arg);
		while (access(path, F_OK))
			nap(0.02);
	} else {
		fprintf(stderr, "lab actor: unknown step %s\n", op);
		exit(2);
	}
}

int main(void)
{
	const char *env = getenv("LAB_STEPS");
	char *steps = strdup(env ? env : ""), *save = NULL, *s;
	for (s = strtok_r(steps, ";", &save); s; s = strtok_r(NULL, ";", &save)) {
		char *arg = strchr(s, ':');
		if (arg)
			*arg++ = 0;
		step(s, arg);
	}
	char pid[32];
	snprintf(pid, sizeof pid, "%d.done", getpid());
	touch("actor", pid);
	for (;;)
		pause(); /* SIGTERM's default action ends us */
}
