/* Unit tests for the pure pieces of the AWS client: times, endpoints, errors, backoff, profiles. */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../check.h"
#include "secrets/aws_creds.h"
#include "secrets/aws_endpoint.h"
#include "secrets/aws_profile.h"
#include "secrets/aws_request.h"

static void test_time(void)
{
    CHECK(aws_parse_time("1970-01-01T00:00:00Z") == 0);
    CHECK(aws_parse_time("2015-08-30T12:36:00Z") == 1440938160);
    CHECK(aws_parse_time("2015-08-30T12:36:00.123Z") == 1440938160);
    CHECK(aws_parse_time("2015-08-30T14:36:00+02:00") == 1440938160);
    CHECK(aws_parse_time("2024-02-29T23:59:59Z") == 1709251199);
    CHECK(aws_parse_time("2015-08-30 12:36:00") == -1);
    CHECK(aws_parse_time("2015-13-30T12:36:00Z") == -1);
    CHECK(aws_parse_time("2015-08-30T12:36:00Zjunk") == -1);
    CHECK(aws_parse_time("") == -1);
}

static void test_partitions(void)
{
    CHECK_STR(aws_region_dns_suffix("eu-west-1"), "amazonaws.com");
    CHECK_STR(aws_region_dns_suffix("cn-north-1"), "amazonaws.com.cn");
    CHECK_STR(aws_region_dns_suffix("us-gov-west-1"), "amazonaws.com");
    CHECK_STR(aws_region_dns_suffix("us-iso-east-1"), "c2s.ic.gov");
    CHECK_STR(aws_region_dns_suffix("us-isob-east-1"), "sc2s.sgov.gov");
    CHECK_STR(aws_region_dns_suffix("eu-isoe-west-1"), "cloud.adc-e.uk");
    CHECK_STR(aws_region_dns_suffix("us-isof-south-1"), "csp.hci.ic.gov");
    CHECK(aws_region_valid("ap-southeast-2"));
    CHECK(!aws_region_valid("EU-WEST-1"));
    CHECK(!aws_region_valid("eu_west"));
    CHECK(!aws_region_valid(""));

    char r[65];
    CHECK(aws_arn_region("arn:aws:secretsmanager:eu-west-3:123456789012:secret:db-AbCdEf", r,
                         sizeof(r)));
    CHECK_STR(r, "eu-west-3");
    CHECK(aws_arn_region("arn:aws-cn:secretsmanager:cn-north-1:1:secret:x", r, sizeof(r)));
    CHECK_STR(r, "cn-north-1");
    CHECK(!aws_arn_region("prod/app/db", r, sizeof(r)));
    CHECK(!aws_arn_region("arn:aws:iam::123456789012:role/x", r, sizeof(r)));

    /* RDS endpoint names: the label before the suffix, only at the end of the name. */
    CHECK(aws_rds_host_region("mydb.cluster-abc123.eu-west-1.rds.amazonaws.com", r, sizeof(r)));
    CHECK_STR(r, "eu-west-1");
    CHECK(aws_rds_host_region("db.abc.us-gov-west-1.RDS.AmazonAWS.com.", r, sizeof(r)));
    CHECK_STR(r, "us-gov-west-1");
    CHECK(aws_rds_host_region("db.abc.cn-north-1.rds.amazonaws.com.cn", r, sizeof(r)));
    CHECK_STR(r, "cn-north-1");
    CHECK(aws_rds_host_region("p.proxy-abc.ap-south-2.rds.amazonaws.com", r, sizeof(r)));
    CHECK_STR(r, "ap-south-2");
    CHECK(!aws_rds_host_region("db.us-east-1.rds.amazonaws.com.evil.example", r, sizeof(r)));
    CHECK(!aws_rds_host_region("us-east-1.rds.amazonaws.com", r, sizeof(r)));
    CHECK(!aws_rds_host_region(".rds.amazonaws.com", r, sizeof(r)));
    CHECK(!aws_rds_host_region("db.abc.Bad_Region.rds.amazonaws.com", r, sizeof(r)));
    CHECK(!aws_rds_host_region("127.0.0.1", r, sizeof(r)));
    CHECK(!aws_rds_host_region("", r, sizeof(r)));
    CHECK(!aws_rds_host_region(NULL, r, sizeof(r)));
    char tiny[4];
    CHECK(!aws_rds_host_region("db.abc.eu-west-1.rds.amazonaws.com", tiny, sizeof(tiny)));
}

static void check_endpoint(const char *explicit_url, const char *region, const char *want)
{
    char err[256] = "";
    char *url = aws_service_endpoint(explicit_url, "secretsmanager", "SECRETS_MANAGER", region, err,
                                     sizeof(err));
    if (!want) {
        CHECK(url == NULL && err[0]);
    } else {
        if (!url)
            fprintf(stderr, "endpoint error: %s\n", err);
        CHECK_STR(url, want);
    }
    free(url);
}

static void test_endpoints(void)
{
    unsetenv("AWS_ENDPOINT_URL_SECRETS_MANAGER");
    unsetenv("AWS_ENDPOINT_URL");
    unsetenv("AWS_USE_FIPS_ENDPOINT");
    check_endpoint(NULL, "eu-west-1", "https://secretsmanager.eu-west-1.amazonaws.com");
    check_endpoint(NULL, "cn-northwest-1",
                   "https://secretsmanager.cn-northwest-1.amazonaws.com.cn");
    check_endpoint(NULL, "us-iso-east-1", "https://secretsmanager.us-iso-east-1.c2s.ic.gov");
    check_endpoint(NULL, NULL, NULL);
    setenv("AWS_USE_FIPS_ENDPOINT", "true", 1);
    check_endpoint(NULL, "us-gov-west-1",
                   "https://secretsmanager-fips.us-gov-west-1.amazonaws.com");
    unsetenv("AWS_USE_FIPS_ENDPOINT");
    setenv("AWS_ENDPOINT_URL", "https://general.example", 1);
    check_endpoint(NULL, "eu-west-1", "https://general.example");
    setenv("AWS_ENDPOINT_URL_SECRETS_MANAGER", "http://127.0.0.1:4566", 1);
    check_endpoint(NULL, "eu-west-1", "http://127.0.0.1:4566");
    check_endpoint("https://explicit.example", "eu-west-1", "https://explicit.example");
    unsetenv("AWS_ENDPOINT_URL_SECRETS_MANAGER");
    unsetenv("AWS_ENDPOINT_URL");
    /* Plain http only to loopback. */
    check_endpoint("http://10.0.0.1:4566", "eu-west-1", NULL);
    check_endpoint("http://localhost:4566", "eu-west-1", "http://localhost:4566");
    check_endpoint("http://[::1]:4566", "eu-west-1", "http://[::1]:4566");
    check_endpoint("ftp://127.0.0.1", "eu-west-1", NULL);
    check_endpoint("not a url", "eu-west-1", NULL);

    char host[256], path[256];
    CHECK(aws_url_host_path("https://sm.eu-west-1.amazonaws.com", host, sizeof(host), path,
                            sizeof(path)));
    CHECK_STR(host, "sm.eu-west-1.amazonaws.com");
    CHECK_STR(path, "/");
    CHECK(aws_url_host_path("http://127.0.0.1:4566/x/", host, sizeof(host), path, sizeof(path)));
    CHECK_STR(host, "127.0.0.1:4566");
    CHECK_STR(path, "/x/");
    CHECK(aws_url_host_path("https://h:443", host, sizeof(host), path, sizeof(path)));
    CHECK_STR(host, "h");
    CHECK(aws_url_host_path("http://[::1]:8080", host, sizeof(host), path, sizeof(path)));
    CHECK_STR(host, "[::1]:8080");
}

static void test_errors(void)
{
    char code[64], msg[256];
    struct http_response r = {.status = 400,
                              .body = "{\"__type\":\"com.amazonaws.secretsmanager#"
                                      "ResourceNotFoundException\",\"Message\":\"can't find\"}"};
    r.body_len = strlen(r.body);
    aws_response_error(&r, code, sizeof(code), msg, sizeof(msg));
    CHECK_STR(code, "ResourceNotFoundException");
    CHECK_STR(msg, "can't find");
    CHECK(!aws_error_retryable(&r, code));

    r.error_type = "ThrottlingException:http://internal.amazon.com/coral/";
    aws_response_error(&r, code, sizeof(code), msg, sizeof(msg));
    CHECK_STR(code, "ThrottlingException");
    CHECK(aws_error_retryable(&r, code));

    struct http_response x = {.status = 403,
                              .body = "<ErrorResponse><Error><Type>Sender</Type><Code>"
                                      "SignatureDoesNotMatch</Code><Message>bad sig</Message>"
                                      "</Error></ErrorResponse>"};
    x.body_len = strlen(x.body);
    aws_response_error(&x, code, sizeof(code), msg, sizeof(msg));
    CHECK_STR(code, "SignatureDoesNotMatch");
    CHECK_STR(msg, "bad sig");

    struct http_response e500 = {.status = 503, .body = "", .body_len = 0};
    CHECK(aws_error_retryable(&e500, ""));
    struct http_response net = {.status = 0, .error = "Connection refused"};
    CHECK(aws_error_retryable(&net, ""));
    CHECK(aws_error_bad_credentials("ExpiredTokenException"));
    CHECK(!aws_error_bad_credentials("AccessDeniedException"));

    for (int attempt = 0; attempt < 12; attempt++) {
        long ms = aws_backoff_ms(attempt, 500, 20000);
        long cap = 500L << (attempt < 6 ? attempt : 6);
        CHECK(ms >= 0 && ms <= (cap < 20000 ? cap : 20000));
    }
}

static void test_credentials_json(void)
{
    char err[256];
    cJSON *j = cJSON_Parse("{\"AccessKeyId\":\"ASIA1\",\"SecretAccessKey\":\"s3cr3t\","
                           "\"Token\":\"tok\",\"Expiration\":\"2030-01-01T00:00:00Z\"}");
    struct aws_credentials *c = aws_credentials_from_json(j, err, sizeof(err));
    CHECK(c && strcmp(c->session_token, "tok") == 0 && c->expiration == 1893456000);
    aws_credentials_unref(c);
    cJSON_Delete(j);
    j = cJSON_Parse("{\"AccessKeyId\":\"ASIA1\",\"Token\":\"s3cr3t\"}");
    CHECK(aws_credentials_from_json(j, err, sizeof(err)) == NULL);
    CHECK(strstr(err, "SecretAccessKey") && !strstr(err, "s3cr3t"));
    cJSON_Delete(j);
}

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    fputs(text, f);
    fclose(f);
}

static void test_profiles(void)
{
    char dir[] = "/tmp/credproxy-aws-test.XXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    char creds[256], conf[256];
    snprintf(creds, sizeof(creds), "%s/credentials", dir);
    snprintf(conf, sizeof(conf), "%s/config", dir);
    write_file(creds, "# comment\n[default]\naws_access_key_id = AKID1\n"
                      "aws_secret_access_key=secret1\n[ops]\naws_access_key_id = AKID2\n");
    write_file(conf, "[default]\nregion = eu-west-1\ns3 =\n  region = nested\n"
                     "[profile ops]\nregion = us-east-2\naws_access_key_id = FROMCONFIG\n"
                     "[ops]\nregion = wrong-section\n");
    struct aws_ctx ctx = {.creds_file = creds, .config_file = conf, .profile = "default"};
    char *v = aws_profile_region(&ctx);
    CHECK_STR(v, "eu-west-1");
    free(v);
    v = aws_profile_get(&ctx, "default", "aws_secret_access_key");
    CHECK_STR(v, "secret1");
    free(v);
    v = aws_profile_get(&ctx, "ops", "region");
    CHECK_STR(v, "us-east-2");
    free(v);
    v = aws_profile_get(&ctx, "ops", "aws_access_key_id"); /* the credentials file wins */
    CHECK_STR(v, "AKID2");
    free(v);
    CHECK(aws_profile_get(&ctx, "nobody", "region") == NULL);
    unlink(creds);
    unlink(conf);
    rmdir(dir);
}

int main(void)
{
    test_time();
    test_partitions();
    test_endpoints();
    test_errors();
    test_credentials_json();
    test_profiles();
    return test_summary();
}
