/*
 * A pre-fork server on forkprof's C ABI: the master starts the profiler, records a little of
 * its own work, then forks 3 workers with plain fork(). Each worker records samples of its
 * own named functions, flushes, stops and exits; the master waits for every worker, then
 * stops.
 *
 * What it shows: nothing special is needed around fork() on Linux (the pthread_atfork
 * handlers do the work); each worker writes its own profiles, named with its pid; the
 * master's buffered samples stay the master's (no worker profile contains them); names
 * interned in the master keep their ids in the workers.
 *
 * Usage: prefork_server <output-dir> [accepted-worker-status]
 * Prints one line per worker: "worker <i> pid <pid> function <name>", which ci/test-ffi.sh
 * uses to find each worker's profile file and check it.
 *
 * A worker that fails a check exits with status 3. `accepted-worker-status` names one more
 * status to accept besides 0: under `valgrind --error-exitcode=1` every worker exits with 1,
 * because a forked child holds the parent's profiler threads' state with no thread left to
 * reach it (the fork protocol abandons it on purpose, rule 4), which valgrind counts as
 * definitely lost in the child. The leak check that matters is the master's, after stop.
 */
#include <forkprof.h>

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#define WORKERS 3
#define SAMPLES_PER_WORKER 200
#define TIMEOUT_MS 10000

static pid_t master_pid;

/* Exits with status 1 after printing why. Workers use _exit so they never run the master's
 * atexit handlers or flush its stdio buffers twice. */
static void die(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "prefork_server[%d]: ", (int)getpid());
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    if (getpid() == master_pid) {
        exit(1);
    }
    _exit(3);
}

/* Every forkprof call returns a status; on failure forkprof_last_error() says why. */
#define CHECK(call)                                                                       \
    do {                                                                                  \
        forkprof_status st_ = (call);                                                     \
        if (st_ != FORKPROF_OK) {                                                         \
            die("%s failed: %s: %s", #call, forkprof_status_name(st_), forkprof_last_error()); \
        }                                                                                 \
    } while (0)

static forkprof_frame text_frame(const char *function, const char *file, uint32_t line) {
    forkprof_frame f = {.size = sizeof(forkprof_frame), .line = line, .function = function,
                        .function_len = strlen(function), .file = file,
                        .file_len = strlen(file)};
    return f;
}

/* Some CPU work, so cpu-time values are real. */
static volatile uint64_t sink;
static void burn(unsigned rounds) {
    uint64_t x = 1;
    for (unsigned i = 0; i < rounds; i++) {
        x = x * 6364136223846793005ULL + 1442695040888963407ULL;
    }
    sink = x;
}

/* Values: cpu-time (ns) used by `rounds` of work, and a sample count of 1. */
static void measure(unsigned rounds, int64_t values[2]) {
    int64_t before = forkprof_thread_cpu_time_ns();
    burn(rounds);
    int64_t after = forkprof_thread_cpu_time_ns();
    values[0] = (before >= 0 && after >= before) ? after - before : 0;
    values[1] = 1;
}

static void master_accept_loop(const forkprof_profiler *prof) {
    forkprof_frame frames[2] = {
        text_frame("master_accept_loop", __FILE__, __LINE__),
        text_frame("main", __FILE__, __LINE__),
    };
    for (int i = 0; i < 50; i++) {
        int64_t values[2];
        measure(1000, values);
        CHECK(forkprof_record(prof, frames, 2, values, 2, NULL, 0, 0));
    }
}

static void worker_main(const forkprof_profiler *prof, int index, uint32_t idle_id,
                        uint32_t file_id) {
    char handle[64], parse[64], thread_name[32];
    snprintf(handle, sizeof handle, "worker_%d_handle_request", index);
    snprintf(parse, sizeof parse, "worker_%d_parse_headers", index);
    snprintf(thread_name, sizeof thread_name, "worker-%d", index);

    /* Leaf first. */
    forkprof_frame frames[4] = {
        text_frame(parse, __FILE__, 120),
        text_frame(handle, __FILE__, 110),
        text_frame("worker_main", __FILE__, __LINE__),
        text_frame("main", __FILE__, __LINE__),
    };
    forkprof_label labels[2] = {
        {.size = sizeof(forkprof_label), .key = "worker", .key_len = 6,
         .kind = FORKPROF_LABEL_NUM, .num = index},
        {.size = sizeof(forkprof_label), .key = "thread name", .key_len = 11,
         .kind = FORKPROF_LABEL_STR, .str = thread_name, .str_len = strlen(thread_name)},
    };
    /* Ids interned by the master before the fork are valid here too. */
    forkprof_frame_ids idle[2] = {
        {.size = sizeof(forkprof_frame_ids), .function = idle_id, .file = file_id, .line = 200},
        {.size = sizeof(forkprof_frame_ids), .function = idle_id, .file = file_id, .line = 1},
    };

    for (int i = 0; i < SAMPLES_PER_WORKER; i++) {
        int64_t values[2];
        measure(2000 + 100 * (unsigned)index, values);
        CHECK(forkprof_record(prof, frames, 4, values, 2, labels, 2, 0));
        measure(100, values);
        CHECK(forkprof_record_ids(prof, idle, 2, values, 2, labels, 1, 0));
    }

    forkprof_stats stats = {.size = sizeof(forkprof_stats)};
    CHECK(forkprof_flush_sync(prof, TIMEOUT_MS));
    CHECK(forkprof_stop(prof, TIMEOUT_MS, &stats));
    /* Counters in a child describe the child alone. */
    if (stats.pid != (uint32_t)getpid() || stats.samples_recorded != 2 * SAMPLES_PER_WORKER ||
        stats.profiles_written < 1) {
        die("worker %d: unexpected stats: pid %u recorded %llu written %llu", index,
            stats.pid, (unsigned long long)stats.samples_recorded,
            (unsigned long long)stats.profiles_written);
    }
    forkprof_free((forkprof_profiler *)prof);
    _exit(0);
}

int main(int argc, char **argv) {
    if (argc != 2 && argc != 3) {
        fprintf(stderr, "usage: %s <output-dir> [accepted-worker-status]\n", argv[0]);
        return 2;
    }
    int accepted_status = argc == 3 ? atoi(argv[2]) : 0;
    master_pid = getpid();
    const char *dir = argv[1];

    CHECK(forkprof_abi_check(FORKPROF_ABI_VERSION));
    forkprof_config *cfg = NULL;
    CHECK(forkprof_config_new("prefork", 7, &cfg));
    CHECK(forkprof_config_sample_type(cfg, "cpu-time", 8, "nanoseconds", 11));
    CHECK(forkprof_config_sample_type(cfg, "samples", 7, "count", 5));
    CHECK(forkprof_config_tag(cfg, "example:prefork_server", 22));
    CHECK(forkprof_config_period_ms(cfg, 60000));
    CHECK(forkprof_config_output_dir(cfg, dir, strlen(dir), FORKPROF_COMPRESSION_GZIP));
    CHECK(forkprof_config_child_policy(cfg, FORKPROF_CHILD_RESTART));

    forkprof_profiler *prof = NULL;
    CHECK(forkprof_start(cfg, &prof));

    uint32_t idle_id, file_id;
    CHECK(forkprof_intern("worker_idle", 11, &idle_id));
    CHECK(forkprof_intern(__FILE__, strlen(__FILE__), &file_id));

    /* Buffered, not flushed, when the workers fork: it must end up in the master's profile
     * only. */
    master_accept_loop(prof);

    pid_t pids[WORKERS];
    for (int i = 0; i < WORKERS; i++) {
        fflush(stdout); /* or the child would print the master's buffered output again */
        pid_t pid = fork();
        if (pid < 0) {
            die("fork: %s", strerror(errno));
        }
        if (pid == 0) {
            worker_main(prof, i, idle_id, file_id);
        }
        pids[i] = pid;
        printf("worker %d pid %d function worker_%d_handle_request\n", i, (int)pid, i);
    }
    fflush(stdout);

    int failed = 0;
    for (int i = 0; i < WORKERS; i++) {
        int status;
        if (waitpid(pids[i], &status, 0) != pids[i]) {
            die("waitpid(%d) failed", (int)pids[i]);
        }
        if (!WIFEXITED(status) ||
            (WEXITSTATUS(status) != 0 && WEXITSTATUS(status) != accepted_status)) {
            fprintf(stderr, "worker %d (pid %d) failed: status 0x%x\n", i, (int)pids[i], status);
            failed = 1;
        }
    }

    forkprof_stats stats = {.size = sizeof(forkprof_stats)};
    CHECK(forkprof_stop(prof, TIMEOUT_MS, &stats));
    printf("master pid %d recorded %llu samples, wrote %llu profiles\n", (int)master_pid,
           (unsigned long long)stats.samples_recorded,
           (unsigned long long)stats.profiles_written);
    if (stats.samples_recorded != 50 || stats.profiles_written < 1) {
        die("master: unexpected stats");
    }
    forkprof_free(prof);
    forkprof_config_free(cfg);
    return failed;
}
