#include <forkprof.h>
#include <stdio.h>

int main(void) {
    forkprof_config *cfg = NULL;
    forkprof_profiler *prof = NULL;
    /* forkprof_abi_check: a library older than this header is refused here, cleanly. */
    if (forkprof_abi_check(FORKPROF_ABI_VERSION) != FORKPROF_OK ||
        forkprof_config_new("my-service", 10, &cfg) != FORKPROF_OK ||
        forkprof_config_sample_type(cfg, "wall-time", 9, "nanoseconds", 11) != FORKPROF_OK ||
        forkprof_config_output_dir(cfg, "profiles", 8, FORKPROF_COMPRESSION_GZIP) != FORKPROF_OK ||
        forkprof_start(cfg, &prof) != FORKPROF_OK) {
        fprintf(stderr, "forkprof: %s\n", forkprof_last_error());
        return 1;
    }

    /* One sample: a stack (leaf first), one value per sample type, a label. Every struct
     * handed to forkprof starts with its size, so the library reads and writes no more. */
    forkprof_frame frames[] = {
        {.size = sizeof(forkprof_frame), .function = "handle_request", .function_len = 14,
         .file = "server.c", .file_len = 8, .line = 42},
        {.size = sizeof(forkprof_frame), .function = "main", .function_len = 4,
         .file = "server.c", .file_len = 8, .line = 7},
    };
    int64_t wall_ns[] = {10000000};
    forkprof_label labels[] = {
        {.size = sizeof(forkprof_label), .key = "thread name", .key_len = 11,
         .kind = FORKPROF_LABEL_STR, .str = "worker-1", .str_len = 8},
    };
    if (forkprof_record(prof, frames, 2, wall_ns, 1, labels, 1, 0) != FORKPROF_OK) {
        fprintf(stderr, "forkprof: %s\n", forkprof_last_error());
    }

    /* fork() needs nothing special on Linux: the child profiles into its own files. */

    /* Where the host winds down (end of main, a worker's exit path): the last profile is
     * written here. For exits that skip this line, see forkprof_stop_at_exit. */
    forkprof_stats stats = {.size = sizeof(forkprof_stats)};
    if (forkprof_stop(prof, 2000, &stats) == FORKPROF_OK) {
        printf("recorded %llu samples, wrote %llu profiles\n",
               (unsigned long long)stats.samples_recorded,
               (unsigned long long)stats.profiles_written);
    }
    forkprof_free(prof);
    forkprof_config_free(cfg);
    return 0;
}
