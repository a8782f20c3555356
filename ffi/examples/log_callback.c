/*
 * forkprof's messages in a C host: a log callback, an upload that fails (nothing listens on
 * the endpoint), and a fork. The callback is only ever called on the host's own threads,
 * inside a forkprof call (here forkprof_flush_sync and forkprof_drain_log), never on a
 * forkprof thread: so a fork can never leave the child with the host logger's lock held by a
 * forkprof thread. Each process logs its own messages; the child never logs the parent's.
 *
 * Usage: log_callback <port-with-nothing-listening>
 * Prints lines "log <pid> <level> <kind>: <message>" and, per process, "<who> <pid> ok".
 */
#include <forkprof.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

static const char *level_name(uint32_t level) {
    switch (level) {
    case FORKPROF_LOG_ERROR: return "ERROR";
    case FORKPROF_LOG_WARN: return "WARN";
    case FORKPROF_LOG_INFO: return "INFO";
    default: return "DEBUG";
    }
}

/* The host's logger: here stdout; a runtime would hand the line to its own log. */
static int logged;
static void on_message(void *user_data, uint32_t level, uint32_t kind, const char *message,
                       size_t len) {
    (void)user_data;
    printf("log %d %s %u: %.*s\n", (int)getpid(), level_name(level), kind, (int)len, message);
    fflush(stdout);
    logged++;
}

#define CHECK(call)                                                                    \
    do {                                                                               \
        forkprof_status st_ = (call);                                                  \
        if (st_ != FORKPROF_OK) {                                                      \
            fprintf(stderr, "%s: %s: %s\n", #call, forkprof_status_name(st_),          \
                    forkprof_last_error());                                            \
            exit(1);                                                                   \
        }                                                                              \
    } while (0)

static void record_one(forkprof_profiler *prof, const char *function) {
    forkprof_frame frames[] = {{.size = sizeof(forkprof_frame), .line = 1, .function = function,
                                .function_len = strlen(function), .file = "log_callback.c",
                                .file_len = 14}};
    int64_t values[] = {1};
    CHECK(forkprof_record(prof, frames, 1, values, 1, NULL, 0, 0));
}

/* One failed upload: flush_sync waits for the exporter to give up, then delivers. */
static void fail_one_upload(forkprof_profiler *prof, const char *function) {
    record_one(prof, function);
    CHECK(forkprof_flush_sync(prof, 10000));
    forkprof_drain_log(); /* anything that arrived after flush_sync's own delivery */
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: %s <port>\n", argv[0]);
        return 2;
    }
    char url[64];
    int url_len = snprintf(url, sizeof url, "http://127.0.0.1:%s", argv[1]);

    CHECK(forkprof_set_log_callback(FORKPROF_LOG_INFO, on_message, NULL));
    CHECK(forkprof_set_log_rate_limit_ms(0)); /* every failure, for the demo */

    forkprof_config *cfg = NULL;
    forkprof_profiler *prof = NULL;
    CHECK(forkprof_abi_check(FORKPROF_ABI_VERSION));
    CHECK(forkprof_config_new("logdemo", 7, &cfg));
    CHECK(forkprof_config_sample_type(cfg, "samples", 7, "count", 5));
    CHECK(forkprof_config_exporter_url(cfg, url, (size_t)url_len));
    CHECK(forkprof_config_upload_timeouts(cfg, 500, 1000));
    CHECK(forkprof_config_upload_retries(cfg, 1, 5000, 10, 50));
    CHECK(forkprof_start(cfg, &prof));

    fail_one_upload(prof, "master_work");
    if (logged != 1) {
        fprintf(stderr, "master: expected 1 message, got %d\n", logged);
        return 1;
    }

    fflush(stdout);
    pid_t pid = fork();
    if (pid < 0) {
        perror("fork");
        return 1;
    }
    if (pid == 0) {
        logged = 0;
        /* The parent's messages are not the child's: nothing to deliver yet. */
        if (forkprof_drain_log() != 0) {
            fprintf(stderr, "child: delivered a parent's message\n");
            _exit(3);
        }
        fail_one_upload(prof, "worker_work");
        forkprof_stats stats = {.size = sizeof(forkprof_stats)};
        CHECK(forkprof_stop(prof, 5000, &stats));
        if (logged != 1 || stats.profiles_failed != 1) {
            fprintf(stderr, "child: %d messages, %llu failed\n", logged,
                    (unsigned long long)stats.profiles_failed);
            _exit(3);
        }
        printf("child %d ok\n", (int)getpid());
        fflush(stdout);
        forkprof_free(prof);
        _exit(0);
    }
    int status;
    if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        fprintf(stderr, "child failed: status 0x%x\n", status);
        return 1;
    }
    forkprof_stats stats = {.size = sizeof(forkprof_stats)};
    CHECK(forkprof_stop(prof, 5000, &stats));
    printf("master %d ok\n", (int)getpid());
    forkprof_free(prof);
    forkprof_config_free(cfg);
    return 0;
}
