/* The process' phase (daemon.h). */
#include "proxy/daemon.h"

#include <stdatomic.h>

#include "conf/log.h"

static _Atomic int phase = DAEMON_STARTING;

enum daemon_phase daemon_phase(void)
{
    return (enum daemon_phase)atomic_load_explicit(&phase, memory_order_acquire);
}

const char *daemon_phase_name(enum daemon_phase p)
{
    static const char *const names[] = {[DAEMON_STARTING] = "starting",
                                        [DAEMON_READY] = "ready",
                                        [DAEMON_RELOADING] = "reloading",
                                        [DAEMON_DRAINING] = "draining",
                                        [DAEMON_STOPPING] = "stopping"};
    return (unsigned)p < sizeof(names) / sizeof(names[0]) ? names[p] : "?";
}

void daemon_set_phase(enum daemon_phase p, const char *why)
{
    enum daemon_phase from = daemon_phase();
    atomic_store_explicit(&phase, p, memory_order_release);
    log_debug("daemon: %s -> %s: %s", daemon_phase_name(from), daemon_phase_name(p), why);
}
