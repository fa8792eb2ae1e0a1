/* Start-up of AWS-using secret sources: context and region, shared by aws_source and iam_source. */
#include "secrets/aws_setup.h"

#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "conf/log.h"
#include "secrets/aws_endpoint.h"
#include "secrets/aws_metadata.h"
#include "secrets/aws_profile.h"
#include "secrets/http_client.h"

#define DEFAULT_TIMEOUT_MS 5000

const char *aws_env_nonempty(const char *name)
{
    const char *v = getenv(name);
    return v && *v ? v : NULL;
}

bool aws_ctx_setup(struct aws_ctx *ctx, struct event_base *base, int timeout_ms)
{
    const char *home = aws_env_nonempty("HOME");
    const char *profile = aws_env_nonempty("AWS_PROFILE");
    if (!profile)
        profile = aws_env_nonempty("AWS_DEFAULT_PROFILE");
    const char *cf = aws_env_nonempty("AWS_SHARED_CREDENTIALS_FILE");
    const char *gf = aws_env_nonempty("AWS_CONFIG_FILE");
    ctx->base = base;
    ctx->timeout_ms = timeout_ms > 0 ? timeout_ms : DEFAULT_TIMEOUT_MS;
    ctx->profile = strdup(profile ? profile : "default");
    if (cf)
        ctx->creds_file = strdup(cf);
    else if (asprintf(&ctx->creds_file, "%s/.aws/credentials", home ? home : "") < 0)
        ctx->creds_file = NULL;
    if (gf)
        ctx->config_file = strdup(gf);
    else if (asprintf(&ctx->config_file, "%s/.aws/config", home ? home : "") < 0)
        ctx->config_file = NULL;
    ctx->http = http_client_shared(base);
    return ctx->profile && ctx->creds_file && ctx->config_file && ctx->http;
}

void aws_ctx_cleanup(struct aws_ctx *ctx)
{
    if (ctx->http)
        http_client_release(ctx->http);
    ctx->http = NULL;
    free(ctx->region);
    free(ctx->profile);
    free(ctx->creds_file);
    free(ctx->config_file);
    ctx->region = ctx->profile = ctx->creds_file = ctx->config_file = NULL;
}

bool aws_run_until(struct event_base *base, const bool *done)
{
    while (!*done)
        if (event_base_loop(base, EVLOOP_ONCE) != 0)
            return false;
    return true;
}

struct region_wait {
    bool done;
    char *region;
    char err[256];
};

static void region_done(const char *region, const char *err, void *arg)
{
    struct region_wait *w = arg;
    w->done = true;
    if (region)
        w->region = strdup(region);
    else
        snprintf(w->err, sizeof(w->err), "%s", err);
}

bool aws_ctx_resolve_region(struct aws_ctx *ctx, const struct aws_region_hint *hint, char *err,
                            size_t errlen)
{
    const char *purpose = hint->purpose ? hint->purpose : "";
    const char *r = hint->region && *hint->region ? hint->region : NULL;
    const char *from = hint->region_from ? hint->region_from : "region";
    char found[65];
    if (!r && (r = aws_env_nonempty("AWS_REGION")))
        from = "AWS_REGION";
    if (!r && (r = aws_env_nonempty("AWS_DEFAULT_REGION")))
        from = "AWS_DEFAULT_REGION";
    char *prof = r ? NULL : aws_profile_region(ctx);
    if (prof) {
        r = prof;
        from = "the profile";
    }
    if (!r && hint->arn && aws_arn_region(hint->arn, found, sizeof(found))) {
        r = found;
        from = "the secret's ARN";
    }
    if (!r && aws_rds_host_region(hint->rds_host, found, sizeof(found))) {
        r = found;
        from = "the database host name";
    }
    if (r) {
        bool ok = aws_region_valid(r);
        if (ok)
            ctx->region = strdup(r);
        else
            snprintf(err, errlen, "region '%.64s' (from %s) is not a valid AWS region name", r,
                     from);
        if (ok && ctx->region)
            log_debug("AWS region%s %s (from %s)", purpose, r, from);
        free(prof);
        return ok && ctx->region;
    }
    if (aws_env_true("AWS_EC2_METADATA_DISABLED")) {
        snprintf(err, errlen,
                 "no AWS region%s: set region or AWS_REGION or the profile's region, or use the "
                 "secret's ARN (instance metadata is disabled by AWS_EC2_METADATA_DISABLED)",
                 purpose);
        return false;
    }
    struct region_wait w = {0};
    struct aws_fetch *f = aws_imds_region(ctx, region_done, &w);
    if (!f || !aws_run_until(ctx->base, &w.done)) {
        aws_fetch_cancel(f);
        snprintf(err, errlen, "no AWS region%s: cannot ask instance metadata", purpose);
        return false;
    }
    if (!w.region) {
        snprintf(err, errlen, "no AWS region%s: set region or AWS_REGION (instance metadata: %s)",
                 purpose, w.err);
        return false;
    }
    ctx->region = w.region;
    log_info("AWS region%s %s (from instance metadata)", purpose, ctx->region);
    return true;
}
