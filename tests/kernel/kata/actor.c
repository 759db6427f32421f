/* A harmless stand-in for containerd-shim-kata-v2 / qemu-system-x86_64 in the kata kernel tests.
 *
 * Installed under the real executable names so that /proc/<pid>/exe, comm (15 chars) and argv
 * look like the real processes. It ignores its arguments, opens every path listed in
 * $ACTOR_HOLD (colon-separated, e.g. /dev/vfio/42) and keeps them open, writes its pid to
 * $ACTOR_READY when set, then sleeps until a signal ends it. It never touches sysfs or devices.
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int main(void) {
    const char *hold = getenv("ACTOR_HOLD");
    if (hold != NULL) {
        char *copy = strdup(hold);
        for (char *p = strtok(copy, ":"); p != NULL; p = strtok(NULL, ":")) {
            if (open(p, O_RDONLY | O_CLOEXEC) < 0) {
                perror(p);
                return 2;
            }
        }
    }
    const char *ready = getenv("ACTOR_READY");
    if (ready != NULL) {
        FILE *f = fopen(ready, "w");
        if (f != NULL) {
            fprintf(f, "%d\n", (int)getpid());
            fclose(f);
        }
    }
    for (;;) {
        pause();
    }
}
