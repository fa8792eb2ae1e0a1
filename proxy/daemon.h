/*
 * The process' phase, one value every module may read (the admin endpoint's /readyz, the
 * listeners, the workers) and only the main loop changes, in one place: daemon_set_phase,
 * which logs the change and tells systemd (sd_notify) when it supervises the process.
 */
#ifndef CREDPROXY_PROXY_DAEMON_H
#define CREDPROXY_PROXY_DAEMON_H

enum daemon_phase {
    DAEMON_STARTING,  /* reading the secrets, opening listeners */
    DAEMON_READY,     /* listening with a usable secret */
    DAEMON_RELOADING, /* SIGHUP: applying a re-read configuration */
    DAEMON_DRAINING,  /* SIGTERM: no new clients; open ones end at their first idle moment */
    DAEMON_STOPPING,  /* exiting now */
};

/* Any thread. */
enum daemon_phase daemon_phase(void);
const char *daemon_phase_name(enum daemon_phase p);

/* Main loop only. why is logged at debug level. */
void daemon_set_phase(enum daemon_phase p, const char *why);

#endif
