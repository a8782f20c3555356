/*
 * A program built against the baseline header (ffi/abi/v<major>/forkprof.h, the ABI of the last
 * release that promised compatibility) and run by ci/test-ffi.sh against the library being
 * built: what an extension compiled for an earlier release meets after the library is upgraded
 * under it. It uses nothing newer than ABI 1.0, checks every result itself and exits 0 only
 * when stats, labelled records, stop and a fork all behave; ci/test-ffi.sh then reads the
 * profiles it wrote with `go tool pprof`.
 *
 * Usage: old_caller <output-dir>
 */
#include <forkprof.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define TIMEOUT_MS 20000
#define CANARY 0xA5

static void die(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "old_caller (pid %d): ", (int)getpid());
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(1);
}

#define CHECK(call)                                                                          \
    do {                                                                                     \
        forkprof_status st_ = (call);                                                        \
        if (st_ != FORKPROF_OK) {                                                            \
            die("%s: %s: %s", #call, forkprof_status_name(st_), forkprof_last_error());      \
        }                                                                                    \
    } while (0)

/* The caller's stats with bytes after them that the library must never write. */
struct guarded_stats {
    forkprof_stats stats;
    unsigned char after[64];
};

static void guard(struct guarded_stats *g) {
    memset(g, CANARY, sizeof *g);
    g->stats.size = sizeof(forkprof_stats);
}

static void check_guard(const struct guarded_stats *g, const char *what) {
    for (size_t i = 0; i < sizeof g->after; i++) {
        if (g->after[i] != CANARY) {
            die("%s wrote byte %zu past the caller's forkprof_stats", what, i);
        }
    }
    if (g->stats.size != sizeof(forkprof_stats)) {
        die("%s changed the caller's size field to %u", what, g->stats.size);
    }
}

static void record(const forkprof_profiler *prof, const char *function, const char *thread,
                   int64_t worker, int n) {
    forkprof_frame frames[2] = {
        {.size = sizeof(forkprof_frame), .line = 10, .function = function,
         .function_len = strlen(function), .file = "old_caller.c", .file_len = 12},
        {.size = sizeof(forkprof_frame), .line = 1, .function = "main", .function_len = 4,
         .file = "old_caller.c", .file_len = 12},
    };
    forkprof_label labels[2] = {
        {.size = sizeof(forkprof_label), .kind = FORKPROF_LABEL_STR, .key = "thread name",
         .key_len = 11, .str = thread, .str_len = strlen(thread)},
        {.size = sizeof(forkprof_label), .kind = FORKPROF_LABEL_NUM, .key = "worker",
         .key_len = 6, .num = worker},
    };
    int64_t values[1] = {1000};
    for (int i = 0; i < n; i++) {
        CHECK(forkprof_record(prof, frames, 2, values, 1, labels, 2, 0));
    }
}

/* Stats while running, then at stop: this process's own counters, written within bounds. */
static void check_process(const forkprof_profiler *prof, uint64_t recorded, const char *who) {
    struct guarded_stats g;
    guard(&g);
    CHECK(forkprof_stats_get(prof, &g.stats));
    check_guard(&g, "forkprof_stats_get");
    if (g.stats.pid != (uint32_t)getpid() || g.stats.samples_recorded != recorded ||
        g.stats.disabled_reason != 0) {
        die("%s: stats_get: pid %u recorded %llu disabled %u", who, g.stats.pid,
            (unsigned long long)g.stats.samples_recorded, g.stats.disabled_reason);
    }
    guard(&g);
    CHECK(forkprof_stop(prof, TIMEOUT_MS, &g.stats));
    check_guard(&g, "forkprof_stop");
    if (g.stats.pid != (uint32_t)getpid() || g.stats.samples_recorded != recorded ||
        g.stats.profiles_written < 1 || g.stats.profiles_failed != 0) {
        die("%s: stop: pid %u recorded %llu written %llu failed %llu", who, g.stats.pid,
            (unsigned long long)g.stats.samples_recorded,
            (unsigned long long)g.stats.profiles_written,
            (unsigned long long)g.stats.profiles_failed);
    }
    if (forkprof_is_running(prof) != 0) {
        die("%s: still running after stop", who);
    }
    printf("%s pid %d recorded %llu wrote %llu\n", who, (int)getpid(),
           (unsigned long long)g.stats.samples_recorded,
           (unsigned long long)g.stats.profiles_written);
    fflush(stdout);
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: %s <output-dir>\n", argv[0]);
        return 2;
    }
    CHECK(forkprof_abi_check(FORKPROF_ABI_VERSION));
    printf("header ABI %u.%u, library ABI %u.%u (%s)\n", FORKPROF_ABI_VERSION_MAJOR,
           FORKPROF_ABI_VERSION_MINOR, forkprof_abi_version() >> 16,
           forkprof_abi_version() & 0xffff, forkprof_version());

    forkprof_config *cfg = NULL;
    forkprof_profiler *prof = NULL;
    CHECK(forkprof_config_new("old-caller", 10, &cfg));
    CHECK(forkprof_config_sample_type(cfg, "wall-time", 9, "nanoseconds", 11));
    CHECK(forkprof_config_output_dir(cfg, argv[1], strlen(argv[1]), FORKPROF_COMPRESSION_GZIP));
    CHECK(forkprof_start(cfg, &prof));
    forkprof_config_free(cfg);

    record(prof, "old_caller_parent_work", "parent", 1, 10);

    fflush(stdout);
    pid_t pid = fork();
    if (pid < 0) {
        die("fork failed");
    }
    if (pid == 0) {
        /* The child profiles on its own: none of the parent's ten samples count here. */
        record(prof, "old_caller_child_work", "child", 2, 5);
        check_process(prof, 5, "child");
        forkprof_free((forkprof_profiler *)prof);
        _exit(0);
    }
    int status = 0;
    if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        die("child %d failed: status 0x%x", (int)pid, status);
    }
    check_process(prof, 10, "parent");
    forkprof_free(prof);
    return 0;
}
