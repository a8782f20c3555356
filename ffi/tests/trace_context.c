/* Trace context from C: a span's labels appended to the sample's own with
 * forkprof_trace_labels, an endpoint registered after the samples, a request counted.
 * ci/test-ffi.sh runs it and reads the profile back with go tool pprof. */
#include <forkprof.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#define CHECK(call)                                                                  \
    do {                                                                             \
        if ((call) != FORKPROF_OK) {                                                 \
            fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #call,            \
                    forkprof_last_error());                                          \
            return 1;                                                                \
        }                                                                            \
    } while (0)

static int record(forkprof_profiler *prof, const char *fn, uint64_t span, uint64_t root) {
    forkprof_frame frames[] = {
        {.size = sizeof(forkprof_frame), .function = fn, .function_len = strlen(fn),
         .file = "server.c", .file_len = 8, .line = 42},
    };
    int64_t wall_ns[] = {1000};
    /* The sample's own label first, then room for the span's. */
    forkprof_label labels[1 + FORKPROF_TRACE_LABELS];
    for (size_t i = 0; i < sizeof labels / sizeof labels[0]; i++) {
        memset(&labels[i], 0, sizeof labels[i]);
        labels[i].size = sizeof(forkprof_label);
    }
    labels[0].kind = FORKPROF_LABEL_STR;
    labels[0].key = "thread name";
    labels[0].key_len = 11;
    labels[0].str = "worker-1";
    labels[0].str_len = 8;
    size_t n = 0;
    CHECK(forkprof_trace_labels(span, root, 0x0123456789abcdefULL, 0xfedcba9876543210ULL,
                                &labels[1], FORKPROF_TRACE_LABELS, &n));
    if (n != (span ? FORKPROF_TRACE_LABELS : 0)) {
        fprintf(stderr, "forkprof_trace_labels wrote %zu labels\n", n);
        return 1;
    }
    CHECK(forkprof_record(prof, frames, 1, wall_ns, 1, labels, 1 + n, 0));
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s DIR\n", argv[0]);
        return 2;
    }
    forkprof_config *cfg = NULL;
    forkprof_profiler *prof = NULL;
    CHECK(forkprof_abi_check(FORKPROF_ABI_VERSION));
    CHECK(forkprof_config_new("trace-c", 7, &cfg));
    CHECK(forkprof_config_sample_type(cfg, "wall-time", 9, "nanoseconds", 11));
    CHECK(forkprof_config_output_dir(cfg, argv[1], strlen(argv[1]), FORKPROF_COMPRESSION_GZIP));
    CHECK(forkprof_start(cfg, &prof));

    if (record(prof, "traced_handler", 11, 10) || record(prof, "other_request", 21, 20) ||
        record(prof, "untraced_work", 0, 0))
        return 1;
    /* Known when the root span ends, after its samples. */
    CHECK(forkprof_set_endpoint(prof, 10, "GET /users", 10));
    CHECK(forkprof_count_endpoint(prof, "GET /users", 10, 1));

    /* Refusals: too small an array writes nothing; id 0 is no span. */
    forkprof_label small[2] = {{.size = sizeof(forkprof_label)}, {.size = sizeof(forkprof_label)}};
    if (forkprof_trace_labels(1, 1, 0, 0, small, 2, NULL) != FORKPROF_ERR_INVALID ||
        small[0].key != NULL) {
        fprintf(stderr, "a 2-label array was not refused\n");
        return 1;
    }
    if (forkprof_set_endpoint(prof, 0, "x", 1) != FORKPROF_ERR_SAMPLE) {
        fprintf(stderr, "root span id 0 was not refused\n");
        return 1;
    }

    forkprof_stats stats = {.size = sizeof(forkprof_stats)};
    CHECK(forkprof_stop(prof, 5000, &stats));
    printf("trace_context pid %d recorded %llu wrote %llu endpoints_dropped %llu\n", (int)getpid(),
           (unsigned long long)stats.samples_recorded,
           (unsigned long long)stats.profiles_written,
           (unsigned long long)stats.endpoints_dropped);
    forkprof_free(prof);
    forkprof_config_free(cfg);
    return 0;
}
