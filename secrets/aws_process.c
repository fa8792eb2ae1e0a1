/* credential_process: credentials from a command's JSON output, without blocking the loop. */
#include "secrets/aws_process.h"

#include <cjson/cJSON.h>
#include <ctype.h>
#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <openssl/crypto.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define PROCESS_TIMEOUT_MS 30000
#define OUTPUT_MAX         (64 * 1024)
#define STDERR_KEEP        200
#define REAP_POLL_MS       10

extern char **environ;

struct process_provider {
    struct aws_provider base;
    struct aws_ctx *ctx;
    char *name;
    char **argv; /* NULL-terminated */
};

/* One run of the command. */
struct process_op {
    struct aws_fetch base;
    struct process_provider *pp;
    pid_t pid;
    int out_fd, err_fd;
    struct event *out_ev, *err_ev, *timer_ev;
    char *out; /* stdout so far, wiped */
    size_t out_len;
    char errtext[STDERR_KEEP + 1];
    size_t err_len;
    bool timed_out, too_big;
    aws_creds_cb cb;
    void *arg;
};

/* ---- Splitting the command ----------------------------------------------------------------- */

static void free_argv(char **argv)
{
    for (size_t i = 0; argv && argv[i]; i++)
        free(argv[i]);
    free(argv);
}

/* Words as a POSIX shell splits them: blanks separate, quotes and backslashes escape. */
static char **split_words(const char *cmd)
{
    size_t cap = strlen(cmd) / 2 + 2, n = 0;
    char **argv = calloc(cap, sizeof(*argv));
    char *word = malloc(strlen(cmd) + 1);
    if (!argv || !word) {
        free(argv);
        free(word);
        return NULL;
    }
    const char *p = cmd;
    for (;;) {
        while (*p && isspace((unsigned char)*p))
            p++;
        if (!*p)
            break;
        size_t w = 0;
        char quote = 0;
        for (; *p && (quote || !isspace((unsigned char)*p)); p++) {
            if (quote == '\'') {
                if (*p == '\'')
                    quote = 0;
                else
                    word[w++] = *p;
            } else if (*p == '\\' && p[1] && (!quote || p[1] == '"' || p[1] == '\\')) {
                word[w++] = *++p;
            } else if (quote == '"' && *p == '"') {
                quote = 0;
            } else if (!quote && (*p == '\'' || *p == '"')) {
                quote = *p;
            } else {
                word[w++] = *p;
            }
        }
        word[w] = '\0';
        if (n + 1 >= cap || !(argv[n++] = strdup(word))) {
            free(word);
            free_argv(argv);
            return NULL;
        }
    }
    free(word);
    if (n == 0) {
        free(argv);
        return NULL;
    }
    return argv;
}

/* ---- Running it ---------------------------------------------------------------------------- */

static void op_free(struct process_op *op)
{
    if (op->out_ev)
        event_free(op->out_ev);
    if (op->err_ev)
        event_free(op->err_ev);
    if (op->timer_ev)
        event_free(op->timer_ev);
    if (op->out_fd >= 0)
        close(op->out_fd);
    if (op->err_fd >= 0)
        close(op->err_fd);
    if (op->pid > 0) {
        /* Cancelled while running: kill it, and reap it (SIGKILL ends it at once). */
        kill(op->pid, SIGKILL);
        while (waitpid(op->pid, NULL, 0) < 0 && errno == EINTR)
            ;
    }
    if (op->out) {
        OPENSSL_cleanse(op->out, OUTPUT_MAX + 1);
        free(op->out);
    }
    free(op);
}

static void op_cancel(struct aws_fetch *base)
{
    op_free((struct process_op *)base);
}

static void finish(struct process_op *op, int status)
{
    char err[512];
    struct aws_credentials *c = NULL;
    const char *name = op->pp->argv[0];
    if (op->timed_out) {
        snprintf(err, sizeof(err), "credential_process %.100s did not finish within %d s", name,
                 PROCESS_TIMEOUT_MS / 1000);
    } else if (status != 0) {
        for (char *q = op->errtext; *q; q++)
            if (!isprint((unsigned char)*q))
                *q = ' ';
        if (WIFEXITED(status))
            snprintf(err, sizeof(err), "credential_process %.100s exited with status %d%s%s", name,
                     WEXITSTATUS(status), op->errtext[0] ? ": " : "", op->errtext);
        else
            snprintf(err, sizeof(err), "credential_process %.100s was killed by signal %d", name,
                     WTERMSIG(status));
    } else if (op->too_big) {
        snprintf(err, sizeof(err), "credential_process %.100s wrote more than %d bytes", name,
                 OUTPUT_MAX);
    } else {
        cJSON *j = cJSON_ParseWithLength(op->out ? op->out : "", op->out_len);
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, "Version");
        char why[256];
        if (!cJSON_IsObject(j))
            snprintf(err, sizeof(err), "credential_process %.100s: the output is not JSON", name);
        else if (!cJSON_IsNumber(v) || v->valuedouble != 1)
            snprintf(err, sizeof(err), "credential_process %.100s: the output's 'Version' is not 1",
                     name);
        else if (!(c = aws_credentials_from_json(j, why, sizeof(why))))
            snprintf(err, sizeof(err), "credential_process %.100s: %s", name, why);
        cJSON_Delete(j);
    }
    op->cb(c, c ? NULL : err, op->arg);
    op_free(op);
}

/* Reaps the child once both pipes are closed; polls briefly when it is still exiting. */
static void try_reap(struct process_op *op)
{
    if (op->out_fd >= 0 || op->err_fd >= 0)
        return;
    int status = 0;
    pid_t r = waitpid(op->pid, &status, WNOHANG);
    if (r == 0) {
        struct timeval tv = {0, REAP_POLL_MS * 1000};
        evtimer_add(op->timer_ev, &tv);
        return;
    }
    op->pid = 0;
    if (r < 0)
        status = 0; /* already reaped (SIGCHLD ignored): judge by the output */
    finish(op, status);
}

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct process_op *op = arg;
    if (op->out_fd >= 0 || op->err_fd >= 0) {
        /* The time limit: kill it; the pipes close and the reap follows. */
        op->timed_out = true;
        kill(op->pid, SIGKILL);
        int status;
        while (waitpid(op->pid, &status, 0) < 0 && errno == EINTR)
            ;
        op->pid = 0;
        finish(op, status);
        return;
    }
    try_reap(op);
}

static void close_stream(int *fd, struct event **ev)
{
    event_free(*ev);
    *ev = NULL;
    close(*fd);
    *fd = -1;
}

static void on_out(evutil_socket_t fd, short what, void *arg)
{
    (void)what;
    struct process_op *op = arg;
    char buf[4096];
    ssize_t n = read(fd, buf, sizeof(buf));
    if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return;
    if (n <= 0) {
        close_stream(&op->out_fd, &op->out_ev);
        try_reap(op);
        return;
    }
    if (op->out_len + (size_t)n > OUTPUT_MAX)
        op->too_big = true;
    else {
        memcpy(op->out + op->out_len, buf, (size_t)n);
        op->out_len += (size_t)n;
    }
    OPENSSL_cleanse(buf, sizeof(buf));
}

static void on_err(evutil_socket_t fd, short what, void *arg)
{
    (void)what;
    struct process_op *op = arg;
    char buf[1024];
    ssize_t n = read(fd, buf, sizeof(buf));
    if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return;
    if (n <= 0) {
        close_stream(&op->err_fd, &op->err_ev);
        try_reap(op);
        return;
    }
    /* Keep the first line only: enough to say why it failed. */
    for (ssize_t i = 0; i < n && op->err_len < STDERR_KEEP; i++) {
        if (buf[i] == '\n')
            op->err_len = STDERR_KEEP;
        else
            op->errtext[op->err_len++] = buf[i];
    }
}

static bool spawn(struct process_op *op, char *err, size_t errlen)
{
    int out[2], errp[2];
    if (pipe2(out, O_CLOEXEC) != 0) {
        snprintf(err, errlen, "credential_process: pipe: %s", strerror(errno));
        return false;
    }
    if (pipe2(errp, O_CLOEXEC) != 0) {
        snprintf(err, errlen, "credential_process: pipe: %s", strerror(errno));
        close(out[0]);
        close(out[1]);
        return false;
    }
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_adddup2(&fa, out[1], 1);
    posix_spawn_file_actions_adddup2(&fa, errp[1], 2);
    /* Only those three: whatever a library opened without close-on-exec stays here. */
    posix_spawn_file_actions_addclosefrom_np(&fa, 3);
    posix_spawnattr_t attr;
    posix_spawnattr_init(&attr);
    sigset_t none, all;
    sigemptyset(&none);
    sigfillset(&all);
    posix_spawnattr_setsigmask(&attr, &none);
    posix_spawnattr_setsigdefault(&attr, &all);
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
    int rc = posix_spawnp(&op->pid, op->pp->argv[0], &fa, &attr, op->pp->argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    posix_spawnattr_destroy(&attr);
    close(out[1]);
    close(errp[1]);
    op->out_fd = out[0];
    op->err_fd = errp[0];
    if (rc != 0) {
        op->pid = 0;
        snprintf(err, errlen, "credential_process: cannot run %.100s: %s", op->pp->argv[0],
                 strerror(rc));
        return false;
    }
    fcntl(op->out_fd, F_SETFL, O_NONBLOCK);
    fcntl(op->err_fd, F_SETFL, O_NONBLOCK);
    return true;
}

static struct aws_fetch *process_fetch(struct aws_provider *p, aws_creds_cb cb, void *arg,
                                       char *err, size_t errlen)
{
    struct process_provider *pp = (struct process_provider *)p;
    struct process_op *op = calloc(1, sizeof(*op));
    if (!op) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    op->base.cancel = op_cancel;
    op->pp = pp;
    op->cb = cb;
    op->arg = arg;
    op->out_fd = op->err_fd = -1;
    op->out = malloc(OUTPUT_MAX + 1);
    if (!op->out) {
        snprintf(err, errlen, "out of memory");
        op_free(op);
        return NULL;
    }
    if (!spawn(op, err, errlen)) {
        op_free(op);
        return NULL;
    }
    struct event_base *base = pp->ctx->base;
    op->out_ev = event_new(base, op->out_fd, EV_READ | EV_PERSIST, on_out, op);
    op->err_ev = event_new(base, op->err_fd, EV_READ | EV_PERSIST, on_err, op);
    op->timer_ev = evtimer_new(base, on_timer, op);
    struct timeval tv = {PROCESS_TIMEOUT_MS / 1000, 0};
    if (!op->out_ev || !op->err_ev || !op->timer_ev || event_add(op->out_ev, NULL) != 0 ||
        event_add(op->err_ev, NULL) != 0 || evtimer_add(op->timer_ev, &tv) != 0) {
        snprintf(err, errlen, "out of memory");
        op_free(op);
        return NULL;
    }
    return &op->base;
}

static void process_destroy(struct aws_provider *p)
{
    struct process_provider *pp = (struct process_provider *)p;
    free_argv(pp->argv);
    free(pp->name);
    free(pp);
}

struct aws_provider *aws_provider_process(struct aws_ctx *ctx, const char *name,
                                          const char *command, char *err, size_t errlen)
{
    struct process_provider *pp = calloc(1, sizeof(*pp));
    if (!pp) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    pp->ctx = ctx;
    pp->name = strdup(name);
    pp->argv = split_words(command);
    if (!pp->name || !pp->argv) {
        snprintf(err, errlen, "%s: credential_process is empty or unreadable", name);
        process_destroy(&pp->base);
        return NULL;
    }
    pp->base.name = pp->name;
    pp->base.fetch = process_fetch;
    pp->base.destroy = process_destroy;
    return &pp->base;
}
