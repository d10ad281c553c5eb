/* The smallest flordb program in C: log a value inside a loop, commit,
 * then read it back through the Arrow C stream interface.
 *
 *   cc ffi/examples/log.c -Iffi/include -L$TARGET/debug -lflordb_ffi -o log
 *   (cd some-git-repo && LD_LIBRARY_PATH=$TARGET/debug /path/to/log)
 *
 * Prints the number of rows of dataframe("loss") and exits 0, or prints
 * flordb's message and exits 1.
 */
#include <stdio.h>
#include <string.h>

#include "flor.h"

/* The Arrow C stream interface (https://arrow.apache.org/docs/format/CStreamInterface.html). */
#ifndef ARROW_C_STREAM_INTERFACE
#define ARROW_C_STREAM_INTERFACE
struct ArrowSchema;
struct ArrowArray {
    int64_t length, null_count, offset, n_buffers, n_children;
    const void **buffers;
    struct ArrowArray **children;
    struct ArrowArray *dictionary;
    void (*release)(struct ArrowArray *);
    void *private_data;
};
struct ArrowArrayStream {
    int (*get_schema)(struct ArrowArrayStream *, struct ArrowSchema *out);
    int (*get_next)(struct ArrowArrayStream *, struct ArrowArray *out);
    const char *(*get_last_error)(struct ArrowArrayStream *);
    void (*release)(struct ArrowArrayStream *);
    void *private_data;
};
#endif

static int fail(const char *what) {
    fprintf(stderr, "%s: %s\n", what, flor_last_error());
    return 1;
}

int main(void) {
    FlorHandle *h = NULL;
    if (flor_open(".", "log.c", NULL, 0, &h) != FLOR_STATUS_OK) return fail("flor_open");

    uint32_t loss;
    if (flor_name_intern(h, "loss", strlen("loss"), &loss) != FLOR_STATUS_OK) return fail("intern");
    if (flor_loop_enter(h, "epoch", strlen("epoch")) != FLOR_STATUS_OK) return fail("loop_enter");
    for (int64_t epoch = 0; epoch < 3; epoch++) {
        if (flor_loop_iterate(h, epoch, NULL, 0) != FLOR_STATUS_OK) return fail("loop_iterate");
        if (flor_log_f64(h, loss, 1.0 / (double)(epoch + 1)) != FLOR_STATUS_OK) return fail("log");
    }
    if (flor_loop_exit(h, "epoch", strlen("epoch")) != FLOR_STATUS_OK) return fail("loop_exit");
    bool committed = false;
    if (flor_commit(h, &committed) != FLOR_STATUS_OK || !committed) return fail("commit");

    /* A mistake is a status code and a message, never a crash. */
    if (flor_log_f64(h, 999, 1.0) != FLOR_STATUS_INVALID_ARGUMENT) return fail("unknown id accepted");

    const char *name = "loss";
    size_t len = strlen(name);
    struct ArrowArrayStream stream;
    if (flor_query_dataframe(h, &name, &len, 1, false, &stream) != FLOR_STATUS_OK) return fail("dataframe");
    int64_t rows = 0;
    struct ArrowArray batch;
    while (stream.get_next(&stream, &batch) == 0 && batch.release != NULL) {
        rows += batch.length;
        batch.release(&batch);
    }
    stream.release(&stream);
    printf("rows: %lld\n", (long long)rows);
    flor_free(h);
    flor_free(NULL);
    return rows == 3 ? 0 : 1;
}
